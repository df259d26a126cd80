"""The scheduler: a pure state machine (:mod:`~celeriac.scheduler.state`) and the
ZeroMQ server around it (:mod:`~celeriac.scheduler.server`), its journal and dashboard.

Imports only the wire layer and the shared vocabulary (errors, schedules);
never the client, the worker, the front doors or the CLI.
"""
