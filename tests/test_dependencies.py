"""Which compiled dependencies each platform is asked to install: only those PyPI has wheels of.

pip evaluates the markers of pyproject.toml on the machine that installs, so a plain
``pip install`` on a 32-bit ARM board must not ask for cbor2 6.x (on PyPI only as an sdist that
needs Rust there) or crc32c (no wheel at all there). What PyPI had, checked with ``pip download
--only-binary=:all: --platform ... cbor2==6.3.0 crc32c==2.9.post0``: cbor2 6.3 wheels for
manylinux/musllinux x86-64 and aarch64, macOS arm64 and Windows; crc32c 2.9 wheels for those plus
Intel macOS and riscv64 Linux; neither for armv7l, armv6l, i686, s390x or ppc64le.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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
