"""The Ray backend (``backend``), its pool workers (``worker``), the local Ray it may start
(``session``), its primitives on hub actors (``hub``, ``primitives``) and spawned tasks (``tasks``).
Importing this package imports neither Ray nor the backend."""
