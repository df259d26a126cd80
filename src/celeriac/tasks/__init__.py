"""The Celery-style front door: ``App``, ``Task``, ``AsyncResult`` and the canvas.

Built on the engine seam only (:class:`celeriac.client.engine.Engine`): each call
becomes a :class:`~celeriac.client.engine.Submission` handed to ``Engine.enqueue``.
"""
