"""Running the lab on one machine: the supervisor behind ``latency-lab up``, the lab's own Redis,
what a running lab says about itself (``var/lab.json``) and the load generator.

It starts the programs as processes by their entry points and never imports them. The
supervisor, by what each part does: ``runtime`` (the :class:`~latency_lab.lab.runtime.Lab` that
``latency-lab up`` runs), ``programs`` (what runs, in which tier, with which environment and
ports), ``supervisor`` (restarts with backoff, crash-loop limits), ``probes`` (readiness),
``process_tree`` (spawning and stopping process trees), ``children`` (a process's spec and its
life so far) and ``messages`` (``LabError`` and what it quotes).
"""
