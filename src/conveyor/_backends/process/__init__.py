"""The process backend (``backend``: the supervisor) and its workers (``worker``), with the
process-shared primitives (``sync``, ``shared_queue``, ``channel``, ``ordered_queues``, ``pipe``, ``values``,
``pthreads``, ``primitives``).

Importing this package imports nothing else: the fork server preloads ``worker`` alone.
"""
