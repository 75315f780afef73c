"""The Dask backend (``backend``), its primitives on a hub actor (``hub``, ``connection``, ``sync``,
``queues``, ``shared``, ``primitives``) and spawned tasks (``tasks``). Importing this package imports
neither Dask nor the backend: each module is imported where it is used."""
