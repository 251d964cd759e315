"""Checkpoints and logs are architecture-neutral: logs written on arm64, 32-bit ARM and
big-endian s390x (tests/vectors/xarch, made by tests/xarch_vectors.py under qemu-user) recover
here to the state they had there, which is also the state the same program reaches here. With
``pytest -m xarch`` (roots made by tools/xarch/rootfs.sh), the reverse: a log written here
recovers on each of them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import xarch_vectors

VECTORS = Path(__file__).parent / "vectors" / "xarch"
ARCHES = ["arm64", "armhf", "s390x"]
REPO = Path(__file__).resolve().parent.parent
XARCH_DIR = Path(os.environ.get("AMBROSIA_XARCH_DIR", "/var/tmp/ambrosia-xarch"))


def state(expected: Path) -> object:
    return json.loads(expected.read_text())["state"]


@pytest.mark.parametrize("arch", ARCHES)
def test_a_log_written_on_another_architecture_recovers_here(arch: str) -> None:
    made = VECTORS / arch
    recorded = json.loads((made / "expected.json").read_text())
    assert (
        recorded["machine"] in {"arm64": ["aarch64"], "armhf": ["armv7l"], "s390x": ["s390x"]}[arch]
    )
    assert xarch_vectors.checkpoints(made / "log"), "the vector keeps no checkpoint"
    for n in xarch_vectors.checkpoints(made / "log"):
        assert xarch_vectors.recovered(made / "log", n) == recorded["state"], f"checkpoint {n}"


def test_the_program_reaches_the_same_state_on_every_architecture(tmp_path: Path) -> None:
    here = xarch_vectors.make(tmp_path / "here")
    for arch in ARCHES:
        assert state(VECTORS / arch / "expected.json") == here["state"], arch


@pytest.mark.xarch
@pytest.mark.timeout(900)
@pytest.mark.parametrize("arch", ARCHES)
def test_a_log_written_here_recovers_on_another_architecture(arch: str, tmp_path: Path) -> None:
    if not (XARCH_DIR / arch / ".ready").exists():
        pytest.skip(f"no {arch} root in {XARCH_DIR}: run tools/xarch/rootfs.sh {arch}")
    out = tmp_path / "x86_64"
    xarch_vectors.make(out)
    script = Path(xarch_vectors.__file__).resolve()
    done = subprocess.run(
        [
            str(REPO / "tools" / "xarch" / "run.sh"),
            arch,
            str(script),
            "check",
            str(out / "log"),
            str(out / "expected.json"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
        env={**os.environ, "AMBROSIA_XARCH_DIR": str(XARCH_DIR)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout)
    assert done.stdout.count("ok: ") == len(xarch_vectors.checkpoints(out / "log"))
