"""The cluster primitives, once for every engine: state in a hub actor, clients over a transport.

::

    ctx.Lock() ──► factory.py ──► sync.py / data.py ── space.py ──► Transport ──► core.py: Hub
                   (HubPrimitives)  (the clients)       (slices,      (dask/hub.py,   holds state.py's
                                                         leases)       ray/hub.py)     objects

- ``state.py``: each primitive's state, engine-neutral and never blocking ("later" instead).
- ``core.py``: the hub, an asynchronous actor on any engine; the dead-holder rule (leases).
- ``space.py``: the small transport protocol an engine implements, and what every client shares.
- ``sync.py``, ``data.py``: the objects users hold; ``factory.py``: what makes them.

An engine provides only a transport and a factory that opens a space (``_backends/dask``,
``_backends/ray``). This package imports no engine.
"""
