"""Declaring a setting once: its flag, file key, default, help text, parser and example.

A setting is a field of a small frozen dataclass owned by the component that uses it
(``CoordinatorOptions``, ``StoreOptions``, ...), declared with :func:`option` inside a class
decorated with :func:`options`. The command-line arguments, the config file reader and the check
of values given in code are all generated from those declarations and take the option classes as
arguments, so adding a setting is adding one field, wherever its class lives.

Every bad value becomes a :class:`ConfigError` that names where it came from (a flag, a key in a
named file, a field of a class), repeats the value and shows a good one, because these messages
are read by someone at a terminal who has to fix the line they just typed.

This module is the mechanism; :mod:`ambrosia_edge.kinds` has the kinds of value (sizes,
addresses, peer tables, ...) and :mod:`ambrosia_edge.config` declares the settings of
``ambrosia-edge run`` and the precedence rules between the file, the environment and the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, dataclass_transform, overload

from .errors import ConfigError

__all__ = [
    "At",
    "Declared",
    "Kind",
    "Option",
    "Where",
    "add_arguments",
    "check_fields",
    "declared",
    "option",
    "options",
    "pick",
    "read_file",
    "read_values",
]

T = TypeVar("T")

#: Key of an :class:`Option` in a dataclass field's metadata.
METADATA_KEY = "ambrosia_edge.option"

# ---------------------------------------------------------------------------------------------
# Declarations


@dataclass(frozen=True)
class Kind:
    """How one sort of value is read from a flag or a file, and checked when given in code.

    ``read`` and ``check`` take the value and the :class:`At` to blame, and return the value to
    keep. The rest shapes the generated command line and examples: ``show`` turns a value into
    what a user would write (``4194304`` -> ``"4MiB"``), ``toml`` writes an example file line
    when ``key = value`` does not fit, ``in_file`` makes a path in a file relative to the file,
    ``merge`` combines a flag with the file's value instead of replacing it, ``switch`` makes a
    ``--x/--no-x`` flag, ``repeat`` a flag given once per item.
    """

    read: Callable[[object, At], Any]
    check: Callable[[object, At], Any]
    metavar: str | None = None
    show: Callable[[Any], object] = lambda value: value
    toml: Callable[[str, object], str] | None = None
    in_file: Callable[[Any, Path], Any] | None = None
    merge: Callable[[Any, Any], Any] | None = None
    switch: bool = False
    repeat: bool = False


@dataclass(frozen=True)
class Option:
    """What :func:`option` declares about one field, kept in the field's metadata."""

    kind: Kind
    help: str
    flag: str | None
    key: str | None
    example: object
    metavar: str | None
    cli_example: str | None
    toml_example: str | None


@overload
def option(
    *,
    default: T,
    kind: Kind,
    help: str,
    flag: str | None = None,
    key: str | None = "",
    example: object = None,
    metavar: str | None = None,
    cli_example: str | None = None,
    toml_example: str | None = None,
    repr: bool = True,
) -> T: ...
@overload
def option(
    *,
    default_factory: Callable[[], T],
    kind: Kind,
    help: str,
    flag: str | None = None,
    key: str | None = "",
    example: object = None,
    metavar: str | None = None,
    cli_example: str | None = None,
    toml_example: str | None = None,
    repr: bool = True,
) -> T: ...
@overload
def option(
    *,
    kind: Kind,
    help: str,
    flag: str | None = None,
    key: str | None = "",
    example: object = None,
    metavar: str | None = None,
    cli_example: str | None = None,
    toml_example: str | None = None,
    repr: bool = True,
) -> Any: ...
def option(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    kind: Kind,
    help: str,
    flag: str | None = None,
    key: str | None = "",
    example: object = None,
    metavar: str | None = None,
    cli_example: str | None = None,
    toml_example: str | None = None,
    repr: bool = True,
) -> Any:
    """Declare a setting: a dataclass field that also says how users give it.

    ``flag`` is the command-line flag (``"--page-bytes"``), an upper-case word for a positional
    argument (``"TARGET"``), or None for none. ``key`` is the config file key: the field name
    unless given, None for none. ``help`` is the flag's help text; ``(default: ...)`` is added
    from the default unless the text already says it. ``example`` is a good value for error
    messages, by default the default; ``cli_example`` and ``toml_example`` replace the example
    forms derived from it when they would read oddly.
    """
    declared = Option(kind, help, flag, key, example, metavar, cli_example, toml_example)
    metadata = {METADATA_KEY: declared}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, repr=repr, metadata=metadata)
    return dataclasses.field(default=default, repr=repr, metadata=metadata)


def check_fields(obj: object) -> None:
    """Check every declared field of ``obj``: settings built in code skip the flags and the file.

    A typo in a test or an embedding program then fails at construction, naming the field,
    rather than deep inside the runtime.
    """
    where = Where("value", owner=type(obj).__name__)
    for name, item in declared(type(obj)).items():
        value = getattr(obj, name)
        if value is None and item.default is None:
            continue
        item.option.kind.check(value, At(where, item))


@dataclass_transform(frozen_default=True, field_specifiers=(option,))
def options(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass of settings, checked on construction.

    A class that defines ``__post_init__`` itself (to check fields against each other) calls
    :func:`check_fields` there.
    """
    if "__post_init__" not in cls.__dict__:
        setattr(cls, "__post_init__", check_fields)  # noqa: B010 (mypy refuses the assignment)
    return dataclass(frozen=True)(cls)


@dataclass(frozen=True)
class Declared:
    """One declared field: its name in code, what :func:`option` said, and its default."""

    name: str
    option: Option
    default: object

    @property
    def key(self) -> str | None:
        return self.name if self.option.key == "" else self.option.key

    @property
    def example(self) -> object:
        kind, example = self.option.kind, self.option.example
        if example is None and kind.switch:
            example = not self.default
        elif example is None and self.default not in (None, "", dataclasses.MISSING):
            example = self.default
        return None if example is None else kind.show(example)

    def default_text(self) -> str | None:
        """The default as ``--help`` shows it, or None when there is nothing worth showing."""
        if self.default in (None, "", dataclasses.MISSING) or self.default in ({}, []):
            return None
        if self.option.kind.switch:
            return "on" if self.default else "off"
        return str(self.option.kind.show(self.default))

    def flag_label(self) -> str:
        """The flag to name in an error: for a switch, the one that turns the default off."""
        flag, kind = self.option.flag, self.option.kind
        if flag is None:
            return "--" + self.name.replace("_", "-")
        if kind.switch and self.default is True:
            return "--no-" + flag.removeprefix("--")
        return flag


def declared(*classes: type) -> dict[str, Declared]:
    """The declared fields of ``classes`` by name, in declaration order."""
    table: dict[str, Declared] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            found = f.metadata.get(METADATA_KEY)
            if not isinstance(found, Option):
                continue
            if f.name in table and table[f.name].option is not found:
                raise TypeError(f"setting {f.name!r} is declared twice ({cls.__name__})")
            default = f.default
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            table[f.name] = Declared(f.name, found, default)
    return table


def pick(cls: type[T], source: object) -> T:
    """The ``cls`` part of ``source``, such as a component's own options out of Settings."""
    make: Callable[..., T] = cls
    return make(**{f.name: getattr(source, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Where a value came from, so an error can point at the exact thing to edit


@dataclass(frozen=True)
class Where:
    """A source of values: the command line, a config file, or code building ``owner``."""

    kind: Literal["flag", "file", "value"]
    path: Path | None = None
    owner: str = ""


@dataclass(frozen=True)
class At:
    """One setting from one source: what an error message has to name."""

    where: Where
    item: Declared

    @property
    def from_flag(self) -> bool:
        return self.where.kind == "flag"

    def label(self) -> str:
        if self.where.kind == "flag":
            return self.item.flag_label()
        if self.where.kind == "file":
            return f"{self.item.key} in {self.where.path}"
        return f"{self.where.owner}.{self.item.name}"

    def example(self) -> str:
        """A good value in the form this source takes, or "" when none was declared."""
        opt, item = self.item.option, self.item
        if self.where.kind == "flag":
            if opt.cli_example is not None:
                return opt.cli_example
            if opt.kind.switch:
                return item.flag_label()
            return "" if item.example is None else f"{item.flag_label()} {item.example}"
        if opt.toml_example is not None:
            return opt.toml_example
        if item.example is None or item.key is None:
            return ""
        if opt.kind.toml is not None:
            return opt.kind.toml(item.key, item.example)
        return f"{item.key} = {_toml_literal(item.example)}"

    def bad(self, problem: str, value: object, *, show: bool = True) -> ConfigError:
        shown = f", got {value!r}" if show else ""
        example = self.example()
        hint = f"; for example: {example}" if example else ""
        return ConfigError(f"{self.label()}: {problem}{shown}{hint}")


def _toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else json.dumps(str(value))


# ---------------------------------------------------------------------------------------------
# Generated readers: the command line, the config file, values passed in code


def add_arguments(parser: argparse._ActionsContainer, *classes: type) -> None:
    """Add a flag (or a positional argument) for every declared setting of ``classes``.

    Each argument's dest is the field name and its default None, which means "not given", so
    the file and the built-in default stay visible under it.
    """
    for name, item in declared(*classes).items():
        opt, kind = item.option, item.option.kind
        if opt.flag is None:
            continue
        help_text = opt.help
        shown = item.default_text()
        if shown is not None and "(default:" not in help_text:
            help_text += f" (default: {shown})"
        if not opt.flag.startswith("-"):
            parser.add_argument(name, nargs="?", metavar=opt.flag, help=help_text)
        elif kind.switch:
            switch = argparse.BooleanOptionalAction
            parser.add_argument(opt.flag, dest=name, action=switch, default=None, help=help_text)
        else:
            action = "append" if kind.repeat else "store"
            metavar = opt.metavar or kind.metavar
            parser.add_argument(opt.flag, dest=name, action=action, metavar=metavar, help=help_text)


def read_values(
    values: Mapping[str, object], where: Where, table: Mapping[str, Declared]
) -> dict[str, Any]:
    """Convert values by field name (as flags give them) into settings, blaming ``where``."""
    return {
        name: table[name].option.kind.read(value, At(where, table[name]))
        for name, value in values.items()
    }


def read_file(path: Path, table: Mapping[str, Declared], example: str) -> dict[str, Any]:
    """Read a flat TOML file of settings, by field name; unknown keys get a suggestion.

    Paths in the file are relative to the file, not to the directory the command runs in, so a
    deployment directory can be moved as a whole. ``example`` is a short valid file, shown when
    the file is not TOML at all.
    """
    by_key = {item.key: item for item in table.values() if item.key is not None}
    where = Where("file", path)
    base = Path(os.path.expanduser(path)).resolve().parent
    out: dict[str, Any] = {}
    for key, value in _read_toml(path, example).items():
        item = by_key.get(key)
        if item is None:
            close = difflib.get_close_matches(key, sorted(by_key), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown key {key!r} in {path}{hint} (known keys: {', '.join(sorted(by_key))})"
            )
        kind = item.option.kind
        converted = kind.read(value, At(where, item))
        out[item.name] = converted if kind.in_file is None else kind.in_file(converted, base)
    return out


def _read_toml(path: Path, example: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config: file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"--config: {path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"--config: {path} is not valid TOML ({exc}); for example:\n  {example}"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config: {path} is not UTF-8 text ({exc.reason})") from None
