"""Reading typed fields out of a decoded CBOR document, strictly.

A page or a checkpoint that passed its checksum may still come from a buggy or hostile writer,
so each field is taken only as the type it must have. Python's conversions are too kind for
that: ``bytes(10**9)`` allocates a gigabyte of zeros, ``int(2.9)`` is 2 and ``int("7")`` is 7,
so a damaged document would be taken for data instead of being refused. Each reader raises
TypeError or ValueError; the decoder turns those into its own error naming the document.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_bytes", "as_int", "as_list", "as_map", "as_pair", "as_str"]


def as_int(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, found {type(value).__name__}")
    return value


def as_bytes(value: object) -> bytes:
    if type(value) is not bytes:
        raise TypeError(f"expected bytes, found {type(value).__name__}")
    return value


def as_str(value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, found {type(value).__name__}")
    return value


def as_list(value: object) -> list[Any] | tuple[Any, ...]:
    """An array (a tuple where cbor2 6.x decodes one inside a map key)."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"expected an array, found {type(value).__name__}")
    return value


def as_map(value: object) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a map, found {type(value).__name__}")
    return value


def as_pair(value: object) -> tuple[int, int]:
    """A watermark: an array of two integers."""
    items = as_list(value)
    if len(items) != 2:
        raise ValueError(f"expected two integers, found {len(items)} items")
    return as_int(items[0]), as_int(items[1])
