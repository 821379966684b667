"""The ``latency-lab`` command: ``up``, ``status``, ``seed``, ``load``, ``bench``, ``toggles``,
``world``, ``outbox``. The top of the import graph: it may use every other package.
"""
