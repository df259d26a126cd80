"""The client side: ``Client``, futures, the connection to a scheduler, the embedded cluster.

The engine's public seam for the front doors (:mod:`celeriac.tasks`) is the
:class:`~celeriac.client.client.Client` API; nothing outside this package calls
its private methods.
"""

from celeriac.client.client import Client
from celeriac.client.cluster import LocalCluster
from celeriac.client.futures import Future, as_completed, fire_and_forget, wait

__all__ = ["Client", "Future", "LocalCluster", "as_completed", "fire_and_forget", "wait"]
