"""The application-value codec: round trips, pinned bytes, errors, and cbor2 5.x against 6.x."""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import types
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ambrosia_edge import codec
from ambrosia_edge.codec import ProxyRef, decode, encode, register
from ambrosia_edge.errors import CodecError, StateEncodingError

# Run both in this process and, unchanged, under cbor2 5.x in a separate virtualenv.
SAMPLES_SOURCE = '''
import dataclasses
import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

from ambrosia_edge import codec


@dataclasses.dataclass
class Reading:
    sensor: str
    values: list
    window: tuple = ()


@dataclasses.dataclass(frozen=True)
class Cell:
    row: int
    col: tuple


class Mode(enum.Enum):
    IDLE = "idle"
    RUN = 2


codec.register(Reading, "samples.Reading")
codec.register(Cell, "samples.Cell")
codec.register(Mode, "samples.Mode")


def shape(x):
    """Exact types and reprs all the way down; only set members are compared unordered."""
    kind = type(x).__name__
    if isinstance(x, dict):
        return (kind, [(shape(k), shape(v)) for k, v in x.items()])
    if isinstance(x, (list, tuple)):
        return (kind, [shape(i) for i in x])
    if isinstance(x, (set, frozenset)):
        return (kind, sorted(repr(shape(i)) for i in x))
    if dataclasses.is_dataclass(x):
        return (kind, [shape(getattr(x, f.name)) for f in dataclasses.fields(x)])
    return (kind, repr(x))


SAMPLES = [
    None, True, False, 0, 23, 24, -1, -25, 2**64, -(2**64) - 1, 10**40,
    1.5, -0.0, float("nan"), float("inf"), float("-inf"), 1e300,
    "", "text", "\\u00e9\\u4e2d\\U0001f600", b"", b"\\x00\\xff",
    [], (), {}, set(), frozenset(),
    [1, (2, [3, ()]), {"k": (4,)}],
    ((), [], ((),), [()]),
    {"b": 1, "a": 2, 3: "c", (1, 2): [(), ()], frozenset({1, (2, 3)}): {"z": 1, "y": 2}},
    {(1, ("nested", ())): {"v": [1, 2]}},
    {"x", "yy", "a", 1, 2, (3, 4), b"b"},
    frozenset({"q", ("r", 1)}),
    (1, {2, 3}, frozenset({4})),
    datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc),
    datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(-timedelta(hours=8))),
    datetime(2024, 1, 2, 3, 4, 5), datetime(2024, 1, 2, 3, 4, 5, 123),
    date(2024, 2, 29),
    Decimal("1.50"), Decimal("-0"), Decimal("NaN"), Decimal("-Infinity"), Decimal("1E+100"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Fraction(-7, 3),
    Reading("t1", [1.5, (2, []), {"in": {"deep": ()}}], ((1, 2),)),
    Reading("t2", []),
    {Cell(1, (2, 3)): Cell(4, ()), "cells": [Cell(5, (6,))]},
    [Mode.IDLE, Mode.RUN, {Mode.RUN: (Mode.IDLE,)}],
    codec.ProxyRef("bank"),
    {"state": {"history": [(1, "a"), (2, "b")], "seen": {1, 2}}, "at": date(2000, 1, 1)},
]
'''

_samples = sys.modules.setdefault("codec_samples", types.ModuleType("codec_samples"))
exec(compile(SAMPLES_SOURCE, "codec_samples", "exec", dont_inherit=True), _samples.__dict__)
SAMPLES: dict[str, Any] = _samples.__dict__
shape: Callable[[object], object] = SAMPLES["shape"]


@dataclasses.dataclass
class Counter:
    name: str
    sensor: list[Any]


@dataclasses.dataclass
class Unregistered:
    x: int


@dataclasses.dataclass
class Evolving:
    kept: int
    added: int = 7


@dataclasses.dataclass
class Derived:
    base: int
    doubled: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.doubled = self.base * 2


class Colour(enum.Flag):
    RED = 1
    BLUE = 2


register(Counter, "tests.codec.Counter")
register(Evolving, "tests.codec.Evolving")
register(Derived, "tests.codec.Derived")
register(Colour, "tests.codec.Colour")


class Remote:
    """Stands in for a runtime proxy: only the marker attribute matters to the codec."""

    def __init__(self, name: str) -> None:
        self.__ambrosia_proxy_name__ = name


@pytest.mark.parametrize("index", range(len(SAMPLES["SAMPLES"])))
def test_round_trip_keeps_value_type_and_bytes(index: int) -> None:
    value = SAMPLES["SAMPLES"][index]
    data = encode(value)
    back = decode(data)
    assert shape(back) == shape(value)
    assert encode(back) == data


def test_map_order_is_kept_not_sorted() -> None:
    value = {"zeta": 1, "alpha": 2, 10: 3, -1: 4, "mid": {"y": 1, "x": 2}}
    back = decode(encode(value))
    assert list(back) == ["zeta", "alpha", 10, -1, "mid"]
    assert list(back["mid"]) == ["y", "x"]


def test_tuples_stay_tuples_and_lists_stay_lists_everywhere() -> None:
    value = Counter("c", [(1, [2, (3,)]), [()], {"k": ([],)}])
    back = decode(encode({(1, (2,)): value}))
    [(key, counter)] = back.items()
    assert type(key) is tuple and type(key[1]) is tuple
    assert type(counter.sensor) is list
    assert type(counter.sensor[0]) is tuple and type(counter.sensor[0][1]) is list
    assert type(counter.sensor[1][0]) is tuple
    assert type(counter.sensor[2]["k"]) is tuple and type(counter.sensor[2]["k"][0]) is list


def test_sets_and_frozensets_round_trip_as_themselves() -> None:
    back = decode(encode([{1, 2}, frozenset({3}), {frozenset({4}): {5}}]))
    assert back == [{1, 2}, frozenset({3}), {frozenset({4}): {5}}]
    assert [type(x) for x in back] == [set, frozenset, dict]
    [(key, member)] = back[2].items()
    assert type(key) is frozenset and type(member) is set


def test_set_bytes_do_not_depend_on_insertion_order() -> None:
    words = [f"w{i}" for i in range(50)]
    assert encode(set(words)) == encode(set(reversed(words)))
    assert encode(frozenset(words)) == encode(frozenset(reversed(words)))


def test_set_bytes_do_not_depend_on_the_hash_seed() -> None:
    script = (
        "import sys; from ambrosia_edge.codec import encode; "
        "sys.stdout.write(encode({f'w{i}' for i in range(50)} | {(1, 'a'), 2.5}).hex())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_aware_datetime_keeps_its_utc_offset() -> None:
    berlin = datetime(2024, 7, 1, 12, 30, 0, 250, tzinfo=ZoneInfo("Europe/Berlin"))
    back = decode(encode(berlin))
    assert back == berlin
    assert back.utcoffset() == timedelta(hours=2)
    assert back.replace(tzinfo=None) == berlin.replace(tzinfo=None)
    naive = decode(encode(datetime(2024, 7, 1, 12, 30)))
    assert naive.tzinfo is None


def test_offsets_that_are_not_whole_minutes_are_refused() -> None:
    odd = datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=30)))
    with pytest.raises(StateEncodingError, match=r"^when: cannot encode a datetime.datetime; "):
        encode(odd, where="when")


def test_dataclass_fields_missing_from_old_data_take_their_defaults() -> None:
    old = bytes.fromhex("d81b82") + encode("tests.codec.Evolving") + encode({"kept": 1})
    assert decode(old) == Evolving(1, 7)
    assert decode(encode(Evolving(1, 2))) == Evolving(1, 2)


def test_non_init_fields_are_restored_as_stored() -> None:
    derived = Derived(3)
    derived.doubled = 100
    assert decode(encode(derived)).doubled == 100


def test_proxies_encode_by_name_and_decode_through_the_factory() -> None:
    data = encode({"peer": Remote("bank")})
    assert data == encode({"peer": ProxyRef("bank")})
    assert decode(data) == {"peer": ProxyRef("bank")}
    assert decode(data, proxy_factory=lambda name: ("proxy", name)) == {"peer": ("proxy", "bank")}


# These bytes are the test vectors of docs/protocol.md: change them only with the protocol.
VECTORS: list[tuple[object, str]] = [
    ([1, -1, "a", None, True, 1.5], "8601206161f6f5fb3ff8000000000000"),
    ({"b": 1, "a": 2}, "a2616201616102"),
    ((1, 2), "d81b82657475706c65820102"),
    ({(1, "a"): "v"}, "a1d81b82657475706c65820161616176"),
    ({3, 1, 2}, "d9010283010203"),
    ({"bb", "a", "c"}, "d901028361616163626262"),
    (frozenset({1}), "d81b826966726f7a656e736574d901028101"),
    ([float("nan"), float("inf"), -0.0], "83f97e00f97c00fb8000000000000000"),
    (2**64, "c249010000000000000000"),
    ([b"\x00", bytearray(b"\x01")], "8241004101"),
    (
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "c074323032342d30312d30325430333a30343a30355a",
    ),
    (
        datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
        "c07820323032342d30312d30325430333a30343a30352e3030303030362d30353a3330",
    ),
    (
        datetime(2024, 1, 2, 3, 4, 5),
        "d81b82686461746574696d6573323032342d30312d30325430333a30343a3035",
    ),
    (date(2024, 1, 2), "d903ec6a323032342d30312d3032"),
    (Decimal("1.50"), "d81b8267646563696d616c64312e3530"),
    (uuid.UUID(int=1), "d8255000000000000000000000000000000001"),
    (Fraction(1, 3), "d81e820103"),
    (ProxyRef("bank"), "d81b826570726f78796462616e6b"),
    (
        Counter("c", [1]),
        "d81b827374657374732e636f6465632e436f756e746572a2646e616d6561636673656e736f728101",
    ),
    (Colour.RED, "d81b827274657374732e636f6465632e436f6c6f757263524544"),
]


@pytest.mark.parametrize(("value", "expected"), VECTORS)
def test_vectors(value: object, expected: str) -> None:
    assert encode(value).hex() == expected
    assert encode(decode(bytes.fromhex(expected))).hex() == expected


def test_unencodable_value_deep_in_state_names_its_path() -> None:
    with socket.socket() as sock, pytest.raises(StateEncodingError) as info:
        encode({"sensor": [0, 1, {"x": sock}]}, where="Counter")
    assert str(info.value) == (
        "Counter['sensor'][2]['x']: cannot encode a socket.socket; keep only plain data "
        "(numbers, strings, lists, dicts, dataclasses registered with "
        "ambrosia_edge.codec.register) in state, or recreate the object in becoming_primary"
    )
    with pytest.raises(
        StateEncodingError, match=r"^Counter\.sensor\[1\]\[0\]: .*register\(tests\."
    ):
        encode(Counter("c", [0, (Unregistered(1),)]), where="Counter")
    with pytest.raises(StateEncodingError, match=r"^v\{\.\.\.\}\[1\]: cannot encode an object"):
        encode({(1, object())}, where="v")
    with pytest.raises(
        StateEncodingError, match=r"^v<key 1>\[0\]: cannot encode a builtin_function_or_method"
    ):
        encode({"a": 1, (len,): 2}, where="v")
    with pytest.raises(StateEncodingError, match=r"^v\[0\]\['t'\]: .*surrogate"):
        encode([{"t": "ok\ud800"}], where="v")
    with pytest.raises(StateEncodingError, match="combined flags"):
        encode(Colour.RED | Colour.BLUE)
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(StateEncodingError, match="cycle"):
        encode(loop)


@pytest.mark.parametrize("kind", [dict, list])
def test_subclasses_of_plain_containers_are_refused(kind: type) -> None:
    from collections import OrderedDict, UserList

    value = OrderedDict(a=1) if kind is dict else UserList([1])
    with pytest.raises(StateEncodingError, match="cannot encode"):
        encode(value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x82\x01",  # array of two, one item
        b"\x01\x02",  # trailing bytes
        b"\xff",  # a lone break
        b"\x62\xff\xfe",  # invalid UTF-8
        b"\x1c",  # reserved additional information
        b"\xd9\x9c\x40\x01",  # a tag the codec does not use
        bytes.fromhex("d81b82657475706c6501"),  # a tuple whose items are not an array
        bytes.fromhex("d81b8101"),  # tag 27 without a type name
        bytes.fromhex("d81b8267646563696d616c63616263"),  # decimal 'abc'
        bytes.fromhex("d81b826a64656d6f2e506f696e74"),  # truncated object
    ],
)
def test_malformed_input_raises_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


def test_unregistered_type_name_says_which_and_how_to_fix() -> None:
    data = bytes.fromhex("d81b82") + encode("shop.Basket") + encode({"items": []})
    with pytest.raises(CodecError, match=r"'shop\.Basket'.*register"):
        decode(data)


def test_fields_the_class_no_longer_has_are_refused() -> None:
    data = bytes.fromhex("d81b82") + encode("tests.codec.Evolving") + encode({"kept": 1, "gone": 2})
    with pytest.raises(CodecError, match="gone"):
        decode(data)


def test_errors_from_the_proxy_factory_become_codec_errors() -> None:
    def refuse(name: str) -> object:
        raise LookupError(f"no immortal {name}")

    with pytest.raises(CodecError, match="no immortal bank"):
        decode(encode([ProxyRef("bank")]), proxy_factory=refuse)


def test_registration_rules() -> None:
    @dataclasses.dataclass
    class Basket:
        items: list[str]

    assert register(Basket) is Basket
    assert decode(encode(Basket(["x"]))) == Basket(["x"])
    assert register(Basket, "tests.codec.Basket.v2") is Basket
    assert encode(Basket([]))[3:].startswith(encode("tests.codec.Basket.v2"))
    old = bytes.fromhex("d81b82") + encode(f"{__name__}.{Basket.__qualname__}")
    assert decode(old + encode({"items": ["y"]})) == Basket(["y"])
    for reserved in ("tuple", "proxy", "decimal"):
        with pytest.raises(CodecError, match="cannot be a type name"):
            register(Basket, reserved)
    with pytest.raises(CodecError, match="already registered"):
        register(Unregistered, "tests.codec.Counter")
    with pytest.raises(CodecError, match="dataclass or an Enum"):
        register(Remote)


# --- cbor2 5.x (pure Python, what a 32-bit ARM board gets) against the 6.x in use here ---

LEGACY_CBOR2 = "5.9.0"
LEGACY_RUNNER = """
import importlib.metadata, importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
import codec_samples as module
from ambrosia_edge import codec
samples = vars(module)
report = {
    "cbor2": importlib.metadata.version("cbor2"),
    "c_extension": importlib.util.find_spec("_cbor2") is not None,
    "reencoded": [], "encoded": [], "mismatches": [],
}
for index, hexed in enumerate(json.load(open(sys.argv[2]))):
    value = codec.decode(bytes.fromhex(hexed))
    expected = samples["SAMPLES"][index]
    if samples["shape"](value) != samples["shape"](expected):
        report["mismatches"].append([index, repr(value), repr(expected)])
    report["reencoded"].append(codec.encode(value).hex())
    report["encoded"].append(codec.encode(expected).hex())
print(json.dumps(report))
"""


@pytest.fixture(scope="session")
def legacy_python() -> Path:
    """Pure-Python cbor2 5.9 from the directory test_codec_versions uses, run by this Python."""
    from test_codec_versions import _legacy_dir

    wrapper = Path(tempfile.mkdtemp(prefix="ambrosia-edge-cbor2-5-")) / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={_legacy_dir()} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_cbor2_5_decodes_and_reencodes_what_6_wrote(legacy_python: Path, tmp_path: Path) -> None:
    assert importlib.metadata.version("cbor2").startswith("6."), "this side must be cbor2 6.x"
    package = tmp_path / "pkg" / "ambrosia_edge"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in ("codec.py", "errors.py"):
        shutil.copy(Path(codec.__file__).with_name(name), package / name)
    (package.parent / "codec_samples.py").write_text(SAMPLES_SOURCE)
    written = [encode(value).hex() for value in SAMPLES["SAMPLES"]]
    (tmp_path / "written.json").write_text(json.dumps(written))
    (tmp_path / "runner.py").write_text(LEGACY_RUNNER)
    run = subprocess.run(
        [legacy_python, tmp_path / "runner.py", package.parent, tmp_path / "written.json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["cbor2"], report["c_extension"]) == (LEGACY_CBOR2, False)
    assert report["mismatches"] == []
    assert report["reencoded"] == written
    assert report["encoded"] == written
