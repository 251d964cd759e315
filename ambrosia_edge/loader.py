"""Turn a target such as ``counter.py:Counter`` or ``shop.orders:Orders`` into the class.

A file is imported under its own stem (``counter.py`` becomes module ``counter``) with its
directory on ``sys.path``. That is the name a sibling file gets when it does ``import counter``,
so both see one module object and one class, and the name is the same on every run, which
matters to anything that records where a class came from. Because a user file then occupies a
real module name, a file that would shadow a different module (``json.py``, ``anyio.py``) is
refused instead of silently breaking whoever imports the real one later.

Every failure is a :class:`ConfigError` that repeats the target, because the person reading it
typed that target a second ago and needs to see which part is wrong.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
import sys
import traceback
from importlib.machinery import ModuleSpec, SourceFileLoader
from pathlib import Path
from types import ModuleType

from .errors import ConfigError

__all__ = ["is_file_module", "load_class", "split_target"]

_EXAMPLE = "for example counter.py:Counter or mypackage.orders:Orders"


def is_file_module(module: str) -> bool:
    """Whether the part before the colon is a path rather than a dotted module name."""
    return module.endswith(".py") or "/" in module or "\\" in module or module.startswith("~")


def split_target(target: str) -> tuple[str, str]:
    """Split ``module_or_file:Class`` (the class may be dotted: ``mod:Outer.Inner``).

    The split is at the last colon so a Windows path such as ``C:\\app\\counter.py:Counter``
    keeps its drive letter.
    """
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"empty target {target!r}; {_EXAMPLE}")
    module, colon, attr = target.strip().rpartition(":")
    if not colon or "/" in attr or "\\" in attr or attr.endswith(".py"):
        raise ConfigError(
            f"target {target!r} has no ':Class' part; write the class after a colon, "
            f"as in {target}:ClassName ({_EXAMPLE})"
        )
    if not module:
        raise ConfigError(f"target {target!r} names no module or file before the colon; {_EXAMPLE}")
    if not attr or not all(part.isidentifier() for part in attr.split(".")):
        raise ConfigError(
            f"target {target!r}: {attr!r} after the colon is not a class name; {_EXAMPLE}"
        )
    if not is_file_module(module) and not all(p.isidentifier() for p in module.split(".")):
        raise ConfigError(
            f"target {target!r}: {module!r} is neither a dotted module name nor a .py file; "
            f"{_EXAMPLE}"
        )
    return module, attr


def load_class(target: str) -> type:
    """Import the module or file a target names and return the class it names."""
    module_part, attr = split_target(target)
    if is_file_module(module_part):
        module = _load_file(Path(os.path.expanduser(module_part)), target)
    else:
        module = _load_module(module_part, target)
    return _resolve(module, attr, target)


def _failure(what: str, target: str, exc: BaseException) -> ConfigError:
    where = ""
    if not isinstance(exc, SyntaxError):
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            where = f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return ConfigError(
        f"importing {what} for target {target!r} failed: {type(exc).__name__}: {exc}{where}"
    )


def _module_name(path: Path) -> str:
    name = re.sub(r"\W", "_", path.stem)
    return f"_{name}" if name[:1].isdigit() else name


def _load_file(path: Path, target: str) -> ModuleType:
    path = path.resolve()
    if not path.exists():
        raise ConfigError(f"file not found: {path} (from target {target!r}); {_EXAMPLE}")
    if path.is_dir():
        raise ConfigError(
            f"{path} is a directory (from target {target!r}); name a .py file in it, or use "
            f"package.module:Class for a package; {_EXAMPLE}"
        )
    name = _module_name(path)
    loaded = sys.modules.get(name)
    if loaded is not None:
        if _same_file(getattr(loaded, "__file__", None), path):
            return loaded
        raise _shadow_error(path, name, target, getattr(loaded, "__file__", None))
    try:
        other = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        other = None
    if other is not None and not _same_file(other.origin, path):
        raise _shadow_error(path, name, target, other.origin)

    spec = importlib.util.spec_from_file_location(
        name, path, loader=SourceFileLoader(name, str(path))
    )
    assert spec is not None and spec.loader is not None
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return _exec(spec, str(path), target)


def _exec(spec: ModuleSpec, what: str, target: str) -> ModuleType:
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before running so dataclasses and typing can find the module by name while
    # its body executes, as they can for a normal import.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(spec.name, None)
        raise _failure(what, target, exc) from exc
    return module


def _same_file(origin: object, path: Path) -> bool:
    if not isinstance(origin, str):
        return False
    try:
        return os.path.samefile(origin, path)
    except OSError:
        return False


def _shadow_error(path: Path, name: str, target: str, other: object) -> ConfigError:
    where = f" ({other})" if isinstance(other, str) else ""
    return ConfigError(
        f"{path} would be imported as module {name!r}, but that name already belongs to "
        f"another module{where} (from target {target!r}); rename the file, for example to "
        f"my_{name}.py"
    )


def _load_module(name: str, target: str) -> ModuleType:
    # A console script does not put the working directory on sys.path the way ``python -m``
    # does; appending it (not prepending) lets "counter:Counter" find ./counter.py without
    # letting local files shadow installed packages.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            hint = ""
            if Path(name.replace(".", os.sep) + ".py").exists() or Path(name + ".py").exists():
                hint = f"; to load a file by path, write {name.replace('.', '/')}.py:Class"
            raise ConfigError(
                f"no module named {exc.name!r} (from target {target!r}); is it installed, "
                f"or is it a file? ({_EXAMPLE}){hint}"
            ) from exc
        raise _failure(f"module {name!r}", target, exc) from exc
    except (Exception, SystemExit) as exc:
        raise _failure(f"module {name!r}", target, exc) from exc


def _resolve(module: ModuleType, attr: str, target: str) -> type:
    obj: object = module
    walked: list[str] = []
    for part in attr.split("."):
        if not hasattr(obj, part):
            owner = ".".join([module.__name__, *walked])
            classes = sorted(
                name
                for name, value in getattr(obj, "__dict__", {}).items()
                if isinstance(value, type) and value.__module__ == module.__name__
            )
            close = difflib.get_close_matches(part, classes, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            listing = f" (classes there: {', '.join(classes)})" if classes else ""
            raise ConfigError(
                f"{owner!r} has no attribute {part!r} (from target {target!r}){hint}{listing}"
            )
        obj = getattr(obj, part)
        walked.append(part)
    if not isinstance(obj, type):
        kind = type(obj).__name__
        raise ConfigError(
            f"target {target!r} names a {kind}, not a class; an immortal is a class, "
            "for example: class Counter(Immortal): ..."
        )
    return obj
