"""The client side: ``Client``, futures, the connection to a scheduler, the embedded cluster.

The engine's seam for the front doors is :mod:`celeriac.client.engine`: the
Celery-style API (:mod:`celeriac.tasks`) builds :class:`Submission` values and
calls the :class:`Engine` methods, which :class:`Client` implements; nothing
outside this package calls a client's private methods (``tests/unit/test_seam.py``).
Inside, :class:`Client` composes three parts, each in a module of its own:
the future table (:mod:`~celeriac.client.future_table`), the acknowledgements
of detached submissions (:mod:`~celeriac.client.acks`) and the replies to
requests (:mod:`~celeriac.client.replies`), over one
:class:`~celeriac.client.connection.Connection`.
"""

from celeriac.client.client import Client
from celeriac.client.cluster import LocalCluster
from celeriac.client.engine import Engine, Submission
from celeriac.client.futures import Future, as_completed, fire_and_forget, wait

__all__ = [
    "Client",
    "Engine",
    "Future",
    "LocalCluster",
    "Submission",
    "as_completed",
    "fire_and_forget",
    "wait",
]
