"""What several backends share, and nothing that belongs to one of them.

Batch encoding (``batches``, ``bulk``), the worker-side call loop (``calls``), a worker process's
lifetime (``lifetime``, ``liveness``, ``inherited``), running a batch in this process (``inline``), a
task in a process of its own (``spawned``), what cluster engines run on their workers
(``cluster_worker``, ``cluster_tasks``), the in-memory queues (``queues``) and the shared containers'
state and proxies (``managed``). A module here imports only ``conveyor.abc``, ``conveyor._core`` and
this package, never a backend (``tests/test_architecture.py`` checks it).
"""
