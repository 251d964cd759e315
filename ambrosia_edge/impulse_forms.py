"""A form per ``@impulse`` method: its parameters and their types, and what a person typed
turned into arguments.

The page (transports/web.py) builds one form per ``@impulse`` from these descriptions, and
checks what comes back here before anything is sent: a value of the wrong type, a missing or
unknown argument, is refused with a message naming the method and the parameter, so nothing
that would fail in the handler ever reaches the log.

Types come from the annotations: ``int``, ``float``, ``str``, ``bool`` and ``bytes`` (typed as
UTF-8 text) get their own input; ``X | None`` accepts an empty field as None; anything else
(``list``, ``dict``, a dataclass, no annotation) is typed as JSON.
"""

from __future__ import annotations

import inspect
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from .immortal import handlers

__all__ = ["Field", "Form", "FormError", "forms_of", "parse_arguments"]

Kind = Literal["int", "float", "str", "bool", "bytes", "json"]

_KINDS: dict[object, Kind] = {int: "int", float: "float", str: "str", bool: "bool", bytes: "bytes"}


class FormError(ValueError):
    """What was typed cannot be sent: the message says which method and field, and why."""


@dataclass(frozen=True)
class Field:
    """One parameter of an ``@impulse`` method, as a form shows it."""

    name: str
    kind: Kind
    #: None is accepted (the annotation allows it); an empty field means None
    optional: bool
    #: the parameter has a default, so the field may be left empty
    has_default: bool
    #: the default as JSON (None when there is none, or it is not JSON)
    default: Any
    #: the annotation as written, for the label
    annotation: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "optional": self.optional,
            "required": not (self.has_default or self.optional),
            "default": self.default,
            "annotation": self.annotation,
        }


@dataclass(frozen=True)
class Form:
    """The form of one ``@impulse`` method."""

    method: str
    fields: tuple[Field, ...]
    doc: str

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "doc": self.doc,
            "fields": [f.as_json() for f in self.fields],
        }


def forms_of(cls: type) -> dict[str, Form]:
    """The form of every ``@impulse`` method of ``cls``, by method name, sorted."""
    return {
        name: _form(cls, name) for name, role in sorted(handlers(cls).items()) if role == "impulse"
    }


def _form(cls: type, name: str) -> Form:
    function = getattr(cls, name)
    try:
        hints = typing.get_type_hints(function)
    except Exception:
        hints = {}  # an annotation that cannot be resolved: typed as JSON
    fields = []
    parameters = list(inspect.signature(function).parameters.values())[1:]  # not self
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind, optional = _kind(hints.get(p.name, p.annotation))
        has_default = p.default is not p.empty
        default = p.default if has_default and _is_json(p.default) else None
        if isinstance(default, bytes):
            default = None
        annotation = p.annotation if isinstance(p.annotation, str) else _spell(p.annotation)
        fields.append(Field(p.name, kind, optional, has_default, default, annotation))
    doc = inspect.getdoc(function) or ""
    return Form(name, tuple(fields), doc.split("\n\n")[0].replace("``", ""))


def _kind(annotation: object) -> tuple[Kind, bool]:
    """The input kind of an annotation, and whether it accepts None."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "json", True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if len(members) == 1:
            return _KINDS.get(members[0], "json"), optional
        return "json", optional
    return _KINDS.get(annotation, "json"), False


def _spell(annotation: object) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _is_json(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def parse_arguments(form: Form, values: object) -> dict[str, Any]:
    """Turn the submitted ``{field: value}`` into keyword arguments for ``form.method``.

    Values are what an input holds (text; true/false for a check box) or, from a script, the
    typed JSON value itself. An empty text is "not given": the default, or None where the
    annotation allows it. Raises FormError naming the method and the field.
    """
    where = f"{form.method}()"
    if not isinstance(values, dict):
        raise FormError(f"{where}: the arguments must be a JSON object of field: value")
    known = {f.name: f for f in form.fields}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FormError(
            f"{where} has no parameter {unknown[0]!r} (its parameters: "
            f"{', '.join(known) or 'none'})"
        )
    out: dict[str, Any] = {}
    for field in form.fields:
        value = values.get(field.name)
        if value is None or value == "":
            if field.has_default:
                continue
            if field.optional:
                out[field.name] = None
                continue
            if value == "" and field.kind == "str":
                out[field.name] = ""
                continue
            raise FormError(f"{where}: {field.name} is required ({_describe(field.kind)})")
        out[field.name] = _convert(field, value, where)
    return out


def _describe(kind: Kind) -> str:
    return {
        "int": "a whole number",
        "float": "a number",
        "str": "text",
        "bool": "true or false",
        "bytes": "text, sent as UTF-8 bytes",
        "json": "a JSON value",
    }[kind]


def _convert(field: Field, value: object, where: str) -> Any:
    kind = field.kind

    def bad(detail: str = "") -> FormError:
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
        extra = f" ({detail})" if detail else ""
        return FormError(f"{where}: {field.name} must be {_describe(kind)}, got {shown!r}{extra}")

    if kind == "json":
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError as exc:
            raise bad(str(exc).split(":")[0]) from None
    if kind == "str":
        if not isinstance(value, str):
            raise bad()
        return value
    if kind == "bytes":
        if not isinstance(value, str):
            raise bad()
        return value.encode()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad()
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad()
    # float
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise bad() from None
    else:
        raise bad()
    if not math.isfinite(number):
        raise bad("not a finite number")
    return number
