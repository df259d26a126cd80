"""The wire: what crosses a socket, and how.

Message format and validation (:mod:`~celeriac.wire.protocol`), pickling
(:mod:`~celeriac.wire.serialize`), large frames through ``/dev/shm``
(:mod:`~celeriac.wire.sharedmem`), socket helpers, addresses, CURVE keys, and
the references that stand for futures inside arguments.  Every process kind
(client, scheduler, worker) builds on this layer; it imports nothing above it.
"""
