"""The codec accepts, refuses and decodes the same bytes whichever cbor2 it runs on.

A 32-bit ARM board without piwheels gets pure-Python cbor2 5.9; a PC gets 6.x. A logged message
that decodes on one and not on the other would run on one machine and be dropped on the other,
so replaying the same log would give different states. Hypothesis makes CBOR byte strings (well
formed or not, with every tag either cbor2 knows, indefinite lengths, break codes, simple
values) and each one is decoded here and by a worker process running cbor2 5.9.

The worker needs a directory holding pure-Python cbor2 5.9 (``pip install --target DIR
--only-binary=:all: --platform any --python-version 3.X cbor2==5.9.0``): the one named by
``AMBROSIA_CBOR2_5`` (CI sets it, and then a missing install fails the test), else
``.cbor2-5/`` in the repository, which the test fills with pip on first use when it can.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambrosia_edge import codec
from ambrosia_edge.errors import CodecError

LEGACY = "5.9.0"
ROOT = Path(__file__).resolve().parent.parent

# Decodes each line of hex from stdin and answers with one line of JSON: the shape of the value
# (exact types all the way down; cbor2's own types by what they hold) or the refusal.
WORKER = r"""
import dataclasses, json, sys
from ambrosia_edge import codec
from ambrosia_edge.errors import CodecError


def shape(x):
    kind = type(x).__name__
    if kind in ("FrozenDict", "frozendict"):
        return ["frozenmap", [[shape(k), shape(v)] for k, v in x.items()]]
    if kind == "CBORSimpleValue":
        return ["simple", x.value]
    if isinstance(x, dict):
        return [kind, [[shape(k), shape(v)] for k, v in x.items()]]
    if isinstance(x, (list, tuple)):
        return [kind, [shape(i) for i in x]]
    if isinstance(x, (set, frozenset)):
        return [kind, sorted(json.dumps(shape(i)) for i in x)]
    if dataclasses.is_dataclass(x):
        return [kind, [shape(getattr(x, f.name)) for f in dataclasses.fields(x)]]
    return [kind, repr(x)]


def answer(hexed):
    try:
        value = codec.decode(bytes.fromhex(hexed))
    except CodecError:
        return ["refused"]
    except BaseException as exc:
        return ["crashed", f"{type(exc).__name__}: {exc}"]
    return ["decoded", shape(value)]


if __name__ == "__main__":
    import importlib.metadata
    print(json.dumps(importlib.metadata.version("cbor2")), flush=True)
    for line in sys.stdin:
        print(json.dumps(answer(line.strip())), flush=True)
"""


def _legacy_dir() -> Path:
    named = os.environ.get("AMBROSIA_CBOR2_5")
    where = Path(named) if named else ROOT / ".cbor2-5"
    if (where / "cbor2" / "_decoder.py").exists():
        return where
    if named:
        pytest.fail(
            f"AMBROSIA_CBOR2_5={named} holds no cbor2 {LEGACY}; see .ci/run for the install"
        )
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
         "--platform", "any", "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}",
         "--target", str(where), f"cbor2=={LEGACY}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if pip.returncode != 0:
        pytest.skip(f"cannot install cbor2 {LEGACY} into {where} with pip: {pip.stderr[-500:]}")
    return where


class _Worker:
    def __init__(self, legacy: Path, tmp: Path) -> None:
        script = tmp / "codec_worker.py"
        script.write_text(WORKER)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(legacy), str(ROOT)])}
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.version = json.loads(self.proc.stdout.readline())

    def ask(self, data: bytes) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(data.hex() + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Worker]:
    worker = _Worker(_legacy_dir(), tmp_path_factory.mktemp("worker"))
    try:
        assert worker.version == LEGACY
        yield worker
    finally:
        worker.close()


_here: dict[str, Any] = {}
exec(compile(WORKER, "codec_worker", "exec"), _here)


def _answer(data: bytes) -> Any:
    return json.loads(json.dumps(_here["answer"](data.hex())))


def _raw_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major | n])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major | extra]) + n.to_bytes(size, "big")
    raise ValueError(n)


TAGS = [0, 1, 2, 3, 4, 5, 21, 25, 27, 28, 29, 30, 32, 35, 36, 37, 52, 54, 100, 256, 258, 260]
TAGS += [261, 1004, 1040, 43000, 55799, 40000]
_leaf = st.one_of(
    st.integers(-(2**64), 2**64 - 1).map(
        lambda n: _raw_head(0, n) if n >= 0 else _raw_head(0x20, -1 - n)
    ),
    st.binary(max_size=8).map(lambda b: _raw_head(0x40, len(b)) + b),
    st.text(max_size=8).map(lambda t: _raw_head(0x60, len(t.encode(errors="surrogatepass")))
                            + t.encode(errors="surrogatepass")),
    st.sampled_from(["2024-01-02T03:04:05Z", "2024-01-02T03:04:05.5+05:30", "2024-02-30",
                     "1970-01-01T00:00:00", "2024-13-01T00:00:00Z", "tuple", "frozenset",
                     "decimal", "datetime", "proxy", "1.5", "NaN", "samples.Reading",
                     "2024-01-02", "2024-01-02T03:04:05.1234567Z"]).map(
        lambda t: _raw_head(0x60, len(t)) + t.encode()),
    st.binary(min_size=1, max_size=9),  # anything at all
    st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xff", b"\xe0", b"\xf3", b"\xf8\x10",
                     b"\xf8\x20", b"\xf9\x7e\x00", b"\xf9\x3c\x00", b"\xfa\x7f\xc0\x00\x01",
                     b"\xfb\x00\x00\x00\x00\x00\x00\x00\x01", b"\x1c", b"\x5f\x41a\xff",
                     b"\x7f\x61a\xff", b"\x9f\x01\xff", b"\xbf\x01\x02\xff", b"\x50" + bytes(16)]),
)  # fmt: skip


def _extend(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    items = st.lists(children, max_size=4)
    return st.one_of(
        items.map(lambda xs: _raw_head(0x80, len(xs)) + b"".join(xs)),
        items.map(lambda xs: b"\x9f" + b"".join(xs) + b"\xff"),
        items.map(lambda xs: _raw_head(0xA0, len(xs) // 2) + b"".join(xs[: len(xs) // 2 * 2])),
        items.map(lambda xs: b"\xbf" + b"".join(xs) + b"\xff"),
        st.tuples(st.sampled_from(TAGS), children).map(lambda t: _raw_head(0xC0, t[0]) + t[1]),
        st.tuples(children, children).map(lambda t: b"\xd8\x1b\x82" + t[0] + t[1]),
        items.map(lambda xs: b"\xd9\x01\x02" + _raw_head(0x80, len(xs)) + b"".join(xs)),
    )


CBOR = st.recursive(_leaf, _extend, max_leaves=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=CBOR)
def test_cbor2_5_and_6_accept_refuse_and_decode_alike(legacy: _Worker, data: bytes) -> None:
    here, there = _answer(data), legacy.ask(data)
    assert here[0] != "crashed", here
    assert (data.hex(), here) == (data.hex(), there)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=40))
def test_random_bytes_alike(legacy: _Worker, data: bytes) -> None:
    assert _answer(data) == legacy.ask(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",  # a lone break: cbor2 5.x's own break marker as a value
        b"\xa1\xff\x01",  # ... as a map key
        b"\x82\x01\xff",
        bytes.fromhex("d8344401020304"),  # tag 52, an IPv4 address in 6.x only
        bytes.fromhex("d83644fe800000"),  # tag 54, IPv6
        b"\xc1\x00",  # tag 1, epoch time, native in both: not a tag the codec writes
        b"\x9f\x01\xff",  # indefinite length
        b"\xf8\x10",  # a simple value in two bytes that fits in one
        b"\x81" * (codec.MAX_DEPTH + 1) + b"\x00",
        # a set whose content is a simple value: cbor2 5.x decodes that as a named tuple
        bytes.fromhex("d90102e0"),
        bytes.fromhex("d90102f8ff"),
        bytes.fromhex("d81be0"),  # tag 27 over a simple value
        bytes.fromhex("d81ee0"),  # tag 30 likewise
    ],
)
def test_known_differences_are_refused_on_both(legacy: _Worker, data: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(data)
    assert legacy.ask(data) == ["refused"]


def test_deepest_accepted_nesting_is_the_same(legacy: _Worker) -> None:
    data = b"\x81" * codec.MAX_DEPTH + b"\x00"
    assert _answer(data)[0] == "decoded"
    assert legacy.ask(data) == _answer(data)
