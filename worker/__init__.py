"""The background side: the RQ worker that runs the lead service's side effects, and the outbox
relay that enqueues what a request could not.

Entry points: ``python -m latency_lab.worker.process`` (an ``rq`` worker) and
``python -m latency_lab.worker.relay``. The tasks themselves are the service's
(:mod:`latency_lab.service.tasks`): a request runs them inline when ``async_offload`` is off.
"""
