"""A third-party backend, as a conformance-suite plugin: how a backend outside conveyor is tested.

A plugin is a module that registers one or more backends when imported; the suite imports it first
and then runs on the backends named by ``--backend``::

    pytest tests/conformance --backend-plugin conformance.example_plugin --backend thirdparty-thread

(``conformance.example_plugin`` is importable because tests/ is on ``sys.path`` in a run of the
suite; a real plugin is any module importable by the interpreter running pytest.) Which tests apply
follows the backend's declared ``capabilities``, never its name: this one declares the thread
backend's, so it is held to the thread backend's tests.
"""

from __future__ import annotations

import conveyor
from conveyor._backends.local.thread import ThreadBackend

NAME = "thirdparty-thread"


class ThirdPartyThreadBackend(ThreadBackend):
    """The thread backend under another name, as a package of its own would ship it."""

    name = NAME


conveyor.register_backend(NAME, f"{__name__}:ThirdPartyThreadBackend")
