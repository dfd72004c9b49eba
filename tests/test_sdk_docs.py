"""Every public name a policy author imports from etmem_sdk is documented (docstrings), and so is
every hookspec (its docstring cites the C signature)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
from etmem_sdk import hookspecs

MODULES = [
    "etmem_sdk",
    "etmem_sdk.errors",
    "etmem_sdk.hookspecs",
    "etmem_sdk.keyfile",
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


def documented_hooks() -> dict[str, list[str]]:
    """Each hook the contract table of docs/writing-a-policy.md shows, with its arguments."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "writing-a-policy.md").read_text()
    table = text.split("## 2. The contract in one table", 1)[1].split("\n## ", 1)[0]
    return {
        m["op"]: [a.strip() for a in m["args"].split(",") if a.strip()]
        for m in re.finditer(r"`(?P<op>[a-z_]+)\((?P<args>[^)]*)\)`", table)
    }


@pytest.mark.parametrize("op", hookspecs.ENGINE_OPS)
def test_every_hookspec_is_documented_with_its_arguments(op: str) -> None:
    """A hook added to the hookspecs (or an argument renamed) without the policy author's guide
    saying so fails here."""
    documented = documented_hooks()
    assert op in documented, f"docs/writing-a-policy.md's contract table lacks {op}"
    assert documented[op] == list(inspect.signature(getattr(hookspecs, op)).parameters)


def test_the_docs_name_no_hook_that_does_not_exist() -> None:
    assert set(documented_hooks()) <= set(hookspecs.ENGINE_OPS)
