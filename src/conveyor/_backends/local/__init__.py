"""The in-process backends: ``serial`` (the reference semantics) and ``thread``, with their primitives
(the stdlib's own ``threading`` and ``queue`` objects) and spawned tasks."""
