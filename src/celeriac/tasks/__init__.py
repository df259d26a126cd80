"""The Celery-style front door: ``App``, ``Task``, ``AsyncResult`` and the canvas.

Built on the client (:mod:`celeriac.client`) through its public methods only.
"""
