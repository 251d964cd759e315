"""The one CBOR codec for application values: immortal state and call arguments and results.

A checkpoint written on a laptop must restore to the very same values on a 32-bit ARM
board, and deterministic code can observe what generic serialisers lose (tuple or list,
the order of a dict, set or frozenset).  So the layout is pinned down here byte for byte,
the same whichever cbor2 (pure Python 5.6+ or the 6.x C extension) does the encoding.

Wire format (RFC 8949): a value is exactly one data item, lengths are always definite,
and only IANA-registered tags are used.

==================  ==========================================================================
Python              CBOR
==================  ==========================================================================
None, False, True   ``f6``, ``f4``, ``f5``
int                 major type 0/1 in shortest form; outside -2**64 .. 2**64-1 tag 2/3
                    (bignum), the shortest big-endian byte string
float               always float64 (``fb`` + 8 bytes), except NaN ``f97e00``, +inf ``f97c00``,
                    -inf ``f9fc00``
str                 text string (UTF-8)
bytes, bytearray    byte string (decodes as bytes)
list                array
dict                map in insertion order, never sorted; a decoder must keep the order.
                    Keys are any values of this table (a tuple key is a tag 27 item)
set                 tag 258 over an array of the members sorted by the bytewise lexicographic
                    order of their own encodings
aware datetime      tag 0, text ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM|-HH:MM)``: the fraction,
                    6 digits, only when the microseconds are not 0; ``Z`` for offset 0; the
                    offset must be whole minutes.  Decodes with a fixed-offset tzinfo
date                tag 1004 (RFC 8943), text ``YYYY-MM-DD``
UUID                tag 37, the 16 bytes as a byte string
Fraction            tag 30 (rational), ``[numerator, denominator]``
anything else       tag 27 (language-independent object), ``[type name, argument]``: an
                    array of exactly two items
==================  ==========================================================================

No other tags are written, and the decoder refuses every other tag, even those cbor2 decodes
by itself (1, 4, 52, ...): which ones those are, and how leniently, differs between cbor2 5.x
and 6.x, and a logged message must decode, or be refused, alike on both.  For the same reason it
refuses trailing bytes, indefinite lengths, a break code, a two-byte simple value under 32, and
nesting deeper than :data:`MAX_DEPTH`.  Type names under tag 27, with argument:

- ``"tuple"``: array of the items.
- ``"frozenset"``: the members as a tag 258 set, laid out as above.
- ``"datetime"``: naive datetime, text ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` as above.
- ``"decimal"``: Decimal as text (Python ``str``): exact, keeps exponent, signed zero, NaN.
- ``"proxy"``: text, the name of the immortal the proxy stands for.
- any other name: a class given to :func:`register` (default name ``module.qualname``).
  A dataclass carries a map ``{field name: value}`` of all its fields in declaration
  order; an Enum member carries its member name as text.

Values the table does not have but CBOR does (undefined, simple values, a map used as a map
key) decode to the cbor2 in use's own types for them, with the same contents on 5.x and 6.x.

(Past the core's ~500 lines on purpose: encoding and decoding are one concept, the byte layout
above, and a reader checking one against the other wants both, with the decoders for each cbor2
major version, on one page.)
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

import cbor2

from .errors import CodecError, StateEncodingError

__all__ = ["ProxyRef", "decode", "encode", "register"]

_T = TypeVar("_T")
_OBJECT = 27
_LEAF = frozenset({type(None), bool, int, float, str, bytes, bytearray})
_HINT = (
    "keep only plain data (numbers, strings, lists, dicts, dataclasses registered with "
    "ambrosia_edge.codec.register) in state, or recreate the object in becoming_primary"
)
_MINUTE = timedelta(minutes=1)
END = b"AMBROSIA"  # decode() frames the input as [value, END] to notice trailing bytes
FRAME_HEAD = b"\x82"
FRAME_TAIL = b"\x48" + END


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyRef:
    """Keeps a proxy's target where no runtime can connect it (tools, tests); re-encodes as is."""

    name: str

    @property
    def __ambrosia_proxy_name__(self) -> str:
        return self.name


class _Unencodable(Exception):
    """Unwinds the walk; each container on the way out adds its part of the path."""

    def __init__(self, value: object, reason: str = "") -> None:
        super().__init__(reason)
        self.value, self.reason, self.path = value, reason, list[str]()


@dataclasses.dataclass(eq=False, slots=True)
class _Key:
    """Wraps a converted dict key (hashed by identity): a CBORTag holding a list cannot be."""

    value: object


def _default(encoder: Any, value: object) -> None:
    if type(value) is not _Key:
        raise CodecError(f"unexpected {type(value).__name__} reached cbor2")
    encoder.encode(value.value)


def _dumps(value: object) -> bytes:
    return cbor2.dumps(value, default=_default, canonical=False)


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _proxy_name(v: object) -> str | None:
    try:
        name = getattr(v, "__ambrosia_proxy_name__", None)
    except Exception:
        return None
    return name if isinstance(name, str) else None


def _walk(v: object) -> object:
    """cbor2 cannot be told to tag tuples or to order sets, so values are rewritten into what
    it encodes exactly as specified; containers needing no change pass through untouched,
    which keeps the RPC hot path close to plain cbor2."""
    t = type(v)
    if t in _LEAF:
        return v
    convert = _CONVERT.get(t) or _BY_TYPE.get(t, (None, None))[1]
    if convert is not None:
        return convert(v)
    name = _proxy_name(v)
    if name is not None:
        return cbor2.CBORTag(_OBJECT, ["proxy", name])
    if dataclasses.is_dataclass(t) or issubclass(t, enum.Enum):
        raise _Unencodable(v, f"call ambrosia_edge.codec.register({_type_name(t)}) first")
    raise _Unencodable(v)


def _array(v: list[object] | tuple[object, ...]) -> object:
    if _LEAF.issuperset(map(type, v)):
        return v
    out: list[object] = []
    try:
        for item in v:
            out.append(_walk(item))
    except _Unencodable as exc:
        exc.path.append(f"[{len(out)}]")
        raise
    return out


def _dict(v: dict[object, object]) -> object:
    if _LEAF.issuperset(map(type, v.values())) and _LEAF.issuperset(map(type, v)):
        return v
    out: dict[object, object] = {}
    for index, (key, item) in enumerate(v.items()):
        part = f"<key {index}>"
        try:
            new_key = key if type(key) in _LEAF else _Key(_walk(key))
            part = f"[{key!r}]"
            out[new_key] = _walk(item)
        except _Unencodable as exc:
            exc.path.append(part)
            raise
    return out


def _members(v: set[object] | frozenset[object]) -> cbor2.CBORTag:
    try:
        members = [_walk(item) for item in v]
    except _Unencodable as exc:
        exc.path.append("{...}")
        raise
    members.sort(key=_dumps)
    return cbor2.CBORTag(258, members)


def _datetime(v: datetime) -> cbor2.CBORTag:
    offset = v.utcoffset()
    text = v.replace(tzinfo=None).isoformat()
    if offset is None:
        return cbor2.CBORTag(_OBJECT, ["datetime", text])
    if offset % _MINUTE:
        raise _Unencodable(v, f"its UTC offset {offset} is not a whole number of minutes")
    minutes = offset // _MINUTE
    hours, rest = divmod(abs(minutes), 60)
    zone = f"{'-' if minutes < 0 else '+'}{hours:02d}:{rest:02d}" if minutes else "Z"
    return cbor2.CBORTag(0, text + zone)


_CONVERT: dict[type, Callable[[Any], object]] = {
    list: _array,
    dict: _dict,
    tuple: lambda v: cbor2.CBORTag(_OBJECT, ["tuple", _array(v)]),
    set: _members,
    frozenset: lambda v: cbor2.CBORTag(_OBJECT, ["frozenset", _members(v)]),
    datetime: _datetime,
    date: lambda v: cbor2.CBORTag(1004, v.isoformat()),
    Decimal: lambda v: cbor2.CBORTag(_OBJECT, ["decimal", str(v)]),
    UUID: lambda v: cbor2.CBORTag(37, v.bytes),
    Fraction: lambda v: cbor2.CBORTag(30, [v.numerator, v.denominator]),
}
# class -> (name, encoder); name -> (class, builder).  Old names stay, so renames still decode.
_BY_TYPE: dict[type, tuple[str, Callable[[Any], object]]] = {}
_BY_NAME: dict[str, tuple[type, Callable[[Any], object]]] = {}


def _bad_text(v: object, path: str) -> str | None:
    """Path of a str UTF-8 cannot carry (a lone surrogate); only looked for once cbor2 failed."""
    if isinstance(v, str):
        return None if v.encode("utf-8", "replace") == v.encode("utf-8", "ignore") else path
    pairs: list[tuple[str, object]] = []
    if isinstance(v, list | tuple):
        pairs = [(f"{path}[{i}]", x) for i, x in enumerate(v)]
    elif isinstance(v, dict):
        for i, (k, x) in enumerate(v.items()):
            pairs += [(f"{path}<key {i}>", k), (f"{path}[{k!r}]", x)]
    elif isinstance(v, set | frozenset):
        pairs = [(path + "{...}", x) for x in v]
    elif dataclasses.is_dataclass(v) and type(v) in _BY_TYPE:
        pairs = [(f"{path}.{f.name}", getattr(v, f.name)) for f in dataclasses.fields(v)]
    elif _proxy_name(v) is not None:
        pairs = [(path, _proxy_name(v))]
    return next((p for p in (_bad_text(x, q) for q, x in pairs) if p is not None), None)


def encode(value: object, *, where: str = "value") -> bytes:
    """*where* (e.g. ``Counter.sensor``) roots the path in errors, so the message points at
    the attribute to fix rather than at the codec."""
    try:
        return _dumps(_walk(value))
    except _Unencodable as exc:
        path = where + "".join(reversed(exc.path))
        what = _type_name(type(exc.value))
        article = "an" if what[0] in "aeiouAEIOU" else "a"
        raise StateEncodingError(
            f"{path}: cannot encode {article} {what}; {exc.reason or _HINT}"
        ) from None
    except RecursionError:
        raise StateEncodingError(f"{where}: nested too deeply or holds a cycle") from None
    except Exception as exc:  # what cbor2 itself refused: lone surrogates, and bugs
        bad = _bad_text(value, where)
        if bad is None:
            raise StateEncodingError(f"{where}: cannot encode: {exc}") from exc
        raise StateEncodingError(f"{bad}: cannot encode a str with a lone surrogate") from None


def register(cls: type[_T], name: str | None = None) -> type[_T]:
    """Opt a dataclass or Enum in (also as a decorator): decoding must rebuild the class, and
    importing whatever a name in the data says would let data run code.

    Registering a class again under a new name keeps the old name decodable, so that
    checkpoints written before a rename still restore.
    """
    name = name or f"{cls.__module__}.{cls.__qualname__}"
    if name in _BUILTIN or name == "proxy" or not name.isprintable():
        raise CodecError(f"{name!r} cannot be a type name; register {cls!r} under another name")
    old = _BY_NAME.get(name, (cls, None))[0]
    if old is not cls:
        if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise CodecError(f"{name!r} is already registered for {_type_name(old)}")
        _BY_TYPE.pop(old, None)  # the same class defined again, e.g. its module was reloaded
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        _BY_TYPE[cls], _BY_NAME[name] = _enum_codec(cls, name)
    elif isinstance(cls, type) and dataclasses.is_dataclass(cls):
        _BY_TYPE[cls], _BY_NAME[name] = _dataclass_codec(cls, name)
    else:
        raise CodecError(f"register() takes a dataclass or an Enum class, not {cls!r}")
    return cls


_Codec = tuple[tuple[str, Callable[[Any], object]], tuple[type, Callable[[Any], object]]]


def _dataclass_codec(cls: type[Any], name: str) -> _Codec:
    fields = tuple(f.name for f in dataclasses.fields(cls))
    init = frozenset(f.name for f in dataclasses.fields(cls) if f.init)

    def encode_fields(v: Any) -> object:
        out: dict[str, object] = {}
        for field in fields:
            try:
                out[field] = _walk(getattr(v, field))
            except _Unencodable as exc:
                exc.path.append(f".{field}")
                raise
        return cbor2.CBORTag(_OBJECT, [name, out])

    def build(arg: object) -> object:
        given: Mapping[str, object] = _expect(arg, Mapping, name)
        unknown = [k for k in given if k not in fields]
        if unknown:
            raise CodecError(f"{name}: the data has fields {unknown} that {cls!r} lacks")
        try:
            obj = cls(**{k: v for k, v in given.items() if k in init})
        except Exception as exc:
            raise CodecError(f"{name}: cannot rebuild {cls!r}: {exc}") from exc
        for key, value in given.items():
            if key not in init:
                object.__setattr__(obj, key, value)
        return obj

    return (name, encode_fields), (cls, build)


def _enum_codec(cls: type[enum.Enum], name: str) -> _Codec:
    def encode_member(v: enum.Enum) -> object:
        if v.name is None or cls.__members__.get(v.name) is not v:
            raise _Unencodable(v, "only single named members can be encoded, not combined flags")
        return cbor2.CBORTag(_OBJECT, [name, v.name])

    def build(arg: object) -> object:
        member = cls.__members__.get(arg) if isinstance(arg, str) else None
        if member is None:
            raise CodecError(f"{name}: {cls!r} has no member {arg!r}")
        return member

    return (name, encode_member), (cls, build)


#: marks "an array" where ``_expect`` takes the kinds an argument may have
_ARRAY = (list, tuple)


def _is_array(value: object) -> bool:
    """A decoded CBOR array: a list, or (inside a tag, on cbor2 6.x) a tuple, but never a tuple
    subclass: cbor2 5.x decodes a simple value as a named tuple, which an array check by
    ``isinstance`` took for a one-item array (``d90102e0`` was ``{0}`` there, refused on 6.x)."""
    return type(value) is list or type(value) is tuple


def _expect(arg: object, kinds: Any, name: str) -> Any:
    if not (_is_array(arg) if kinds is _ARRAY else isinstance(arg, kinds)):
        raise CodecError(f"malformed {name!r} object: its argument is a {type(arg).__name__}")
    return arg


def _parsed(kind: str, parse: Callable[[str], object]) -> Callable[[object], object]:
    def build(arg: object) -> object:
        try:
            return parse(_expect(arg, str, kind))
        except (ValueError, ArithmeticError):  # decimal.InvalidOperation is an ArithmeticError
            raise CodecError(f"malformed {kind!r} object: {arg!r}") from None

    return build


_BUILTIN: dict[str, Callable[[object], object]] = {
    "tuple": lambda arg: tuple(_expect(arg, _ARRAY, "tuple")),
    "frozenset": lambda arg: frozenset(_expect(arg, set | frozenset, "frozenset")),
    "datetime": _parsed("datetime", datetime.fromisoformat),
    "decimal": _parsed("decimal", Decimal),
}


def _builder(proxy_factory: Callable[[str], object] | None) -> Callable[[Any], object]:
    def build(value: Any) -> object:
        if not _is_array(value) or len(value) != 2 or type(value[0]) is not str:
            raise CodecError("malformed tag 27: expected [type name, argument]")
        name, arg = value
        builtin = _BUILTIN.get(name)
        if builtin is not None:
            return builtin(arg)
        if name == "proxy":
            target = _expect(arg, str, "proxy")
            return ProxyRef(target) if proxy_factory is None else proxy_factory(target)
        registered = _BY_NAME.get(name)
        if registered is None:
            raise CodecError(
                f"cannot decode a {name!r}: no class is registered under that name; call "
                f"ambrosia_edge.codec.register(<the class>, {name!r}) before decoding"
            )
        return registered[1](arg)

    return build


def _reject_tag(tag: Any, _immutable: object = None) -> object:
    raise CodecError(f"unsupported CBOR tag {tag.tag}")


_DIGITS = "[0-9]"
_AWARE = re.compile(
    rf"({_DIGITS}{{4}})-({_DIGITS}{{2}})-({_DIGITS}{{2}})T({_DIGITS}{{2}}):({_DIGITS}{{2}}):"
    rf"({_DIGITS}{{2}})(?:\.({_DIGITS}{{1,6}}))?(?:(Z)|([+-])({_DIGITS}{{2}}):({_DIGITS}{{2}}))\Z"
)
_DATE = re.compile(rf"({_DIGITS}{{4}})-({_DIGITS}{{2}})-({_DIGITS}{{2}})\Z")


def _aware_datetime(text: object) -> datetime:
    match = _AWARE.match(text) if type(text) is str else None
    if match is None:
        raise CodecError(f"malformed tag 0 datetime: {text!r}")
    y, mo, d, h, mi, sec, frac, _z, sign, oh, om = match.groups()
    try:
        offset = timedelta(hours=int(oh), minutes=int(om)) if sign else timedelta(0)
        zone = timezone(-offset if sign == "-" else offset)
        micro = int(frac.ljust(6, "0")) if frac else 0
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), micro, tzinfo=zone)
    except ValueError:
        raise CodecError(f"malformed tag 0 datetime: {text!r}") from None


def _date(text: object) -> date:
    match = _DATE.match(text) if type(text) is str else None
    try:
        if match is not None:
            return date(*map(int, match.groups()))
    except ValueError:
        pass
    raise CodecError(f"malformed tag 1004 date: {text!r}")


def _bignum(value: object) -> int:
    if type(value) is not bytes:
        raise CodecError("malformed bignum: its content is not a byte string")
    return int.from_bytes(value, "big")


def _fraction(value: object) -> Fraction:
    if _is_array(value) and len(value) == 2:
        numerator, denominator = value
        if type(numerator) is int and type(denominator) is int and denominator:
            return Fraction(numerator, denominator)
    raise CodecError(f"malformed tag 30 fraction: {value!r}")


def _uuid(value: object) -> UUID:
    if type(value) is not bytes or len(value) != 16:
        raise CodecError(f"malformed tag 37 UUID: {value!r}")
    return UUID(bytes=value)


def _set(value: object) -> set[object]:
    if not _is_array(value):
        raise CodecError("malformed tag 258 set: its content is not an array")
    try:
        return set(value)
    except TypeError as exc:
        raise CodecError(f"malformed tag 258 set: {exc}") from None


# What the codec decodes, in every cbor2: the tags it writes, each read by the code here rather
# than by cbor2 (whose native tags and their leniency differ between 5.x and 6.x).
_TAGS: dict[int, Callable[[Any], object]] = {
    0: _aware_datetime,
    2: _bignum,
    3: lambda value: -1 - _bignum(value),
    30: _fraction,
    37: _uuid,
    258: _set,
    1004: _date,
}
#: Containers and tags nested deeper than this are refused (the value at the bottom not counted).
MAX_DEPTH = 200
_FRAMED_DEPTH = MAX_DEPTH + 1  # decoding frames the value in one more array
_CBOR2_MAJOR = int(importlib.metadata.version("cbor2").split(".")[0])


class _AllTags(dict[int, Callable[[Any, bool], object]]):
    """cbor2 6.x looks every tag up in ``semantic_decoders`` before its own decoders: a tag that
    is missing here is refused, whether or not this cbor2 knows it (6.x reads 52 and 54 as IP
    addresses, which 5.x does not). Only tag 27 is held; the rarer tags of :data:`_TAGS` come
    from ``__missing__``: each entry held adds ~30 ns to every decode (measured with 6.3)."""

    def __missing__(self, tag: int) -> Callable[[Any, bool], object]:
        read = _TAGS.get(tag)
        if read is None:
            raise CodecError(f"unsupported CBOR tag {tag}")
        return _semantic(read)


def _semantic(read: Callable[[Any], object]) -> Callable[[Any, bool], object]:
    return lambda value, _immutable: read(value)


def _modern_loader(build: Callable[[Any], object]) -> Callable[[bytes], Any]:
    tags = _AllTags({_OBJECT: _semantic(build)})
    load = partial(
        cbor2.loads,
        semantic_decoders=tags,
        tag_hook=_reject_tag,
        allow_indefinite=False,
        max_depth=_FRAMED_DEPTH,
    )
    try:  # a cbor2 that looked up only the tags it lacks would decode tag 1 by itself
        load(b"\xc1\x00")
    except Exception as exc:
        while exc.__cause__ is not None and not isinstance(exc, CodecError):
            exc = exc.__cause__  # type: ignore[assignment]
        if isinstance(exc, CodecError):
            return load
    raise ImportError("this cbor2 6.x does not consult semantic_decoders for every tag")


def _legacy_loader(build: Callable[[Any], object]) -> Callable[[bytes], Any]:
    """cbor2 5.x: its pure-Python decoder (also where its C extension is installed, which has
    no hooks for this), with every item read through :meth:`_Decoder.decode`."""
    from io import BytesIO

    pure: Any = importlib.import_module("cbor2._decoder")  # 5.x only; untyped for 6.x's stubs

    major_decoders = pure.major_decoders
    simple = pure.CBORSimpleValue

    class _Decoder(pure.CBORDecoder):  # type: ignore[misc]
        """Refuses what 6.x refuses (indefinite lengths, a break code, a two-byte simple value
        under 32, nesting past MAX_DEPTH) and reads tags as :data:`_TAGS` says."""

        depth = 0
        _immutable: bool
        _share_index: int | None

        def decode(self, immutable: bool = False, unshared: bool = False) -> Any:
            if immutable:
                old_immutable, self._immutable = self._immutable, True
            if unshared:
                old_index, self._share_index = self._share_index, None
            try:
                initial = self.read(1)[0]
                major, subtype = initial >> 5, initial & 31
                if major < 4:
                    if subtype == 31 and major >= 2:
                        raise CodecError("indefinite-length items are not accepted")
                    return major_decoders[major](self, subtype)
                if major == 7:
                    if subtype == 31:
                        raise CodecError("a break code where a data item was expected")
                    if subtype == 24:
                        n = self.read(1)[0]
                        if n < 32:
                            raise CodecError(f"invalid two-byte simple value {n}")
                        return simple(n)
                    return major_decoders[7](self, subtype)
                if subtype == 31:
                    raise CodecError("indefinite-length items are not accepted")
                self.depth += 1
                if self.depth > _FRAMED_DEPTH:
                    raise CodecError(f"nested deeper than {MAX_DEPTH} levels")
                try:
                    if major < 6:
                        return major_decoders[major](self, subtype)
                    tag = self._decode_length(subtype)
                    read = _TAGS.get(tag) or (build if tag == _OBJECT else None)
                    if read is None:
                        raise CodecError(f"unsupported CBOR tag {tag}")
                    return read(self.decode(unshared=True))
                finally:
                    self.depth -= 1
            finally:
                if immutable:
                    self._immutable = old_immutable
                if unshared:
                    self._share_index = old_index

    def load(data: bytes) -> Any:
        with BytesIO(data) as fp:
            return _Decoder(fp).decode()

    return load


def decode(data: bytes, *, proxy_factory: Callable[[str], object] | None = None) -> Any:
    """Only the runtime knows how to reach another immortal, so it passes *proxy_factory*;
    without one, proxies come back as inert ProxyRef values."""
    return make_decoder(proxy_factory)(data)


def make_loader(proxy_factory: Callable[[str], object] | None = None) -> Callable[[bytes], Any]:
    """``cbor2.loads`` with the codec's hooks bound, for hot paths that frame the input
    themselves (``FRAME_HEAD + data + FRAME_TAIL``, then check the second item is ``END``, as
    ``_decode_with`` does) and handle failures by retrying through a full decoder."""
    build = _builder(proxy_factory)
    return _modern_loader(build) if _CBOR2_MAJOR >= 6 else _legacy_loader(build)


def make_decoder(proxy_factory: Callable[[str], object] | None = None) -> Callable[[bytes], Any]:
    """A ``decode`` with its hooks built once: the dispatch hot path decodes every message."""
    load = make_loader(proxy_factory)

    def decoder(data: bytes) -> Any:
        return _decode_with(load, data)

    return decoder


def _decode_with(load: Callable[[bytes], Any], data: bytes) -> Any:
    framed = FRAME_HEAD + data + FRAME_TAIL
    try:
        items = load(framed)
    except CodecError:
        raise
    except RecursionError:
        raise CodecError("cannot decode: nested too deeply") from None
    except Exception as exc:
        inner: BaseException = exc  # cbor2 6.x wraps what a callback raised
        while inner.__cause__ is not None and not isinstance(inner, CodecError):
            inner = inner.__cause__
        if isinstance(inner, CodecError):
            raise inner from None
        raise CodecError(f"cannot decode {len(data)} bytes of CBOR: {inner}") from exc
    if type(items[1]) is not bytes or items[1] != END:
        raise CodecError(f"cannot decode {len(data)} bytes: not exactly one CBOR data item")
    return items[0]
