"""The lab's shared core: what every program of the lab agrees on.

One typed settings object read from the environment (:mod:`.settings`), the five toggles
(:mod:`.toggles`) and the simulated world (:mod:`.world`), their shared state in Redis that every
process follows within a second (:mod:`.shared_state`), who may change them (:mod:`.access`), the
JSON error responses every HTTP program gives (:mod:`.errors`) and the client of the admin API
(:mod:`.admin_client`). It depends on :mod:`latency_lab.telemetry` only; every program depends on
it.
"""
