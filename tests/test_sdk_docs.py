"""Every public name a policy author imports from etmem_sdk is documented (docstrings), and so is
every hookspec (its docstring cites the C signature)."""

from __future__ import annotations

import importlib
import inspect

import pytest
from etmem_sdk import hookspecs

MODULES = [
    "etmem_sdk",
    "etmem_sdk.errors",
    "etmem_sdk.hookspecs",
    "etmem_sdk.model",
    "etmem_sdk.params",
    "etmem_sdk.scan",
    "etmem_sdk.targets",
    "etmem_sdk.testing",
    "etmem_sdk.worker",
]


def public(module) -> list[tuple[str, object]]:
    names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
    found = []
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not getattr(obj, "__module__", "").startswith("etmem_sdk"):
            continue  # re-exported from etmem_scan / pluggy: documented there
        found.append((name, obj))
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                fn = value.fget if isinstance(value, property) else value
                if not attr.startswith("_") and inspect.isfunction(fn):
                    found.append((f"{name}.{attr}", fn))
    return found


@pytest.mark.parametrize("name", MODULES)
def test_public_names_have_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    assert inspect.getdoc(module), f"{name} has no module docstring"
    missing = [n for n, obj in public(module) if not inspect.getdoc(obj)]
    assert missing == [], f"{name}: undocumented {missing}"


@pytest.mark.parametrize("op", hookspecs.ENGINE_OPS)
def test_every_hookspec_cites_its_c_signature(op: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, op))
    assert doc and f"(*{op})" in doc
