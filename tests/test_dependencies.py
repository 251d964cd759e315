"""Which dependencies each platform is asked to install (only those PyPI has wheels of), and
which optional ones a process imports (only those it is configured to use).

pip evaluates the markers of pyproject.toml on the machine that installs, so a plain
``pip install`` on a 32-bit ARM board must not ask for cbor2 6.x (on PyPI only as an sdist that
needs Rust there) or crc32c (no wheel at all there). What PyPI had, checked with ``pip download
--only-binary=:all: --platform ... cbor2==6.3.0 crc32c==2.9.post0``: cbor2 6.3 wheels for
manylinux/musllinux x86-64 and aarch64, macOS arm64 and Windows; crc32c 2.9 wheels for those plus
Intel macOS and riscv64 Linux; neither for armv7l, armv6l, i686, s390x or ppc64le.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from support import wait_for

ROOT = Path(__file__).resolve().parent.parent


def _environment(sys_platform: str, machine: str) -> dict[str, str]:
    return {
        "sys_platform": sys_platform,
        "platform_machine": machine,
        "platform_system": {"linux": "Linux", "darwin": "Darwin", "win32": "Windows"}[sys_platform],
        "os_name": "nt" if sys_platform == "win32" else "posix",
        "python_version": "3.11",
        "python_full_version": "3.11.2",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def _wanted(sys_platform: str, machine: str) -> dict[str, str]:
    """Requirement name -> its version specifier, as pip on that platform would see them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = _environment(sys_platform, machine)
    out: dict[str, str] = {}
    for line in project["dependencies"]:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            assert req.name not in out, f"{req.name} asked for twice on {sys_platform}/{machine}"
            out[req.name] = str(req.specifier)
    return out


# (sys.platform, platform.machine()) -> (cbor2 6.x has a wheel, crc32c has a wheel)
WHEELS = {
    ("linux", "x86_64"): (True, True),
    ("linux", "aarch64"): (True, True),
    ("darwin", "arm64"): (True, True),
    ("win32", "AMD64"): (True, True),
    ("win32", "ARM64"): (True, True),
    ("win32", "x86"): (True, True),
    ("darwin", "x86_64"): (False, True),
    ("linux", "riscv64"): (False, True),
    ("linux", "armv7l"): (False, False),
    ("linux", "armv6l"): (False, False),
    ("linux", "i686"): (False, False),
    ("linux", "s390x"): (False, False),
    ("linux", "ppc64le"): (False, False),
}


@pytest.mark.parametrize(("platform", "machine"), list(WHEELS))
def test_only_dependencies_with_wheels_are_asked_for(platform: str, machine: str) -> None:
    cbor2_wheel, crc32c_wheel = WHEELS[platform, machine]
    wanted = _wanted(platform, machine)
    assert {"anyio", "platformdirs", "cbor2"} <= wanted.keys()
    if cbor2_wheel:
        assert wanted["cbor2"].startswith(">=6")
    else:  # the last pure-Python cbor2, which the codec also supports
        assert "<6" in wanted["cbor2"]
    assert ("crc32c" in wanted) == crc32c_wheel


# ---------------------------------------------------------------------------------------------
# Start-up on a small board: what is not configured is not imported (issue 13, item 7)

#: Optional dependencies, each imported only by the feature that needs it.
OPTIONAL = ("zeroconf", "ifaddr", "paho", "obstore", "starlette", "uvicorn", "gpiozero")
COUNTER = ROOT / "examples" / "counter.py"
LO = "127.0.0.1"


def _imported(importtime_output: str) -> set[str]:
    """Top-level names of the modules that ``python -X importtime`` says were imported."""
    names = set()
    for line in importtime_output.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            module = line.rsplit("|", 1)[1].strip()
            if module != "package":  # the header line
                names.add(module.partition(".")[0])
    return names


def _run_until_ready(tmp_path: Path, *flags: str) -> set[str]:
    """Start an idle immortal under ``-X importtime``, stop it once primary, return its imports."""
    out = tmp_path / "out.txt"
    args = [sys.executable, "-X", "importtime", "-m", "ambrosia_edge", "run"]
    args += [f"{COUNTER}:Counter", "--log", str(tmp_path / "log"), "--listen", "127.0.0.1:0"]
    with open(out, "wb") as sink:
        # cwd: the checkout's ambrosia_edge/ must not shadow the installed package
        proc = subprocess.Popen([*args, *flags], stderr=sink, stdout=sink, cwd=tmp_path)
    try:
        wait_for(lambda: "primary in epoch" in out.read_text(), 60, "the immortal to start")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return _imported(out.read_text())


def test_help_imports_no_optional_dependency(tmp_path: Path) -> None:
    args = [sys.executable, "-X", "importtime", "-m", "ambrosia_edge", "--help"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, check=True)
    imported = _imported(done.stderr)
    assert "ambrosia_edge" in imported
    assert not imported & set(OPTIONAL)


def test_a_plain_run_imports_no_optional_dependency(tmp_path: Path) -> None:
    imported = _run_until_ready(tmp_path)
    assert {"ambrosia_edge", "anyio", "cbor2"} <= imported
    assert not imported & set(OPTIONAL)


def test_zeroconf_is_imported_when_discovery_is_on(tmp_path: Path) -> None:
    imported = _run_until_ready(tmp_path, "--discovery", "zeroconf", "--discovery-interfaces", LO)
    assert "zeroconf" in imported  # the same check sees an optional dependency when it is used
    assert not imported & {"paho", "obstore", "starlette", "uvicorn"}
