"""The import rules that keep the tree readable, checked on the source (no import is executed).

- A backend package (``_backends/<name>/``) imports only ``conveyor.abc``, ``conveyor._core``, the
  shared package ``_backends/_shared`` and itself; never another backend, never the front end.
- ``_backends/_shared`` imports only ``conveyor.abc``, ``conveyor._core`` and itself.
- ``_core`` and ``abc`` import no backend and no front end.
- No module uses another module's private names (``from m import _x`` or ``m._x``); a private
  *module* (``_core``, ``_shared``) is fine to import, that is how the packages are laid out.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

pytestmark = pytest.mark.timeout(60)

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "conveyor"
BACKENDS = PACKAGE / "_backends"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_module(name: str) -> bool:
    return name in MODULES


def imports(path: pathlib.Path) -> list[tuple[int, str, str | None]]:
    """(line, module, imported name or None) for every conveyor import in ``path``, type-only ones included."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, None) for alias in node.names if alias.name.startswith("conveyor")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("conveyor"):
                out += [(node.lineno, base, alias.name) for alias in node.names]
    return out


def allowed_for(module: str) -> tuple[str, ...] | None:
    """The conveyor modules ``module`` may import (prefixes), or None when it may import anything."""
    parts = module.split(".")
    if parts[:2] == ["conveyor", "_backends"] and len(parts) >= 3:
        own = ".".join(parts[:3])
        if parts[2] == "_shared":
            return (own, "conveyor.abc", "conveyor._core")
        return (own, "conveyor._backends._shared", "conveyor.abc", "conveyor._core")
    if module == "conveyor.abc" or module.startswith("conveyor._core"):
        return ("conveyor.abc", "conveyor._core")
    return None


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def layer_violations() -> list[str]:
    found = []
    for module, path in MODULES.items():
        allowed = allowed_for(module)
        if allowed is None:
            continue
        for line, target, name in imports(path):
            full = f"{target}.{name}" if name and is_module(f"{target}.{name}") else target
            if full in ("conveyor", "conveyor._backends") and name is None:
                continue
            if not within(full, allowed):
                found.append(f"{path.relative_to(SRC)}:{line}: {module} imports {full}")
    return found


def private_name_violations() -> list[str]:
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}  # local name -> conveyor module it is bound to
        for line, target, name in imports(path):
            if name is None:
                continue
            if is_module(f"{target}.{name}"):
                continue  # a module, private or not, is how packages are laid out
            if name.startswith("_") and not name.startswith("__") and target != module:
                found.append(f"{path.relative_to(SRC)}:{line}: from {target} import {name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("conveyor"):
                for alias in node.names:
                    if is_module(f"{node.module}.{alias.name}"):
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("conveyor") and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not is_module(f"{aliases[node.value.id]}.{node.attr}")
                    and aliases[node.value.id] != module):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_the_checker_sees_the_tree():
    """Not vacuous: the modules it reads exist, and it finds the imports they make."""
    assert {"conveyor.pool", "conveyor._backends.process.backend", "conveyor._backends._shared.calls",
            "conveyor._backends.dask.backend", "conveyor._backends.ray.backend",
            "conveyor._backends.local.thread"} <= set(MODULES)
    found = imports(MODULES["conveyor._backends.process.worker"])
    assert any(target == "conveyor._backends._shared.calls" for _, target, _ in found), found
    assert allowed_for("conveyor._backends.dask.hub") is not None
    assert not within("conveyor._backends.process.sync", allowed_for("conveyor._backends.dask.hub"))


def test_backends_import_only_the_contract_the_core_the_shared_package_and_themselves():
    assert layer_violations() == []


def test_no_module_uses_another_modules_private_names():
    assert private_name_violations() == []


def test_every_backend_is_a_package():
    packages = sorted(path.name for path in BACKENDS.iterdir() if (path / "__init__.py").exists())
    assert packages == ["_shared", "auto", "dask", "local", "process", "ray"], packages
    loose = sorted(path.name for path in BACKENDS.glob("*.py") if path.name != "__init__.py")
    assert loose == [], loose
