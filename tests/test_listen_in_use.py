"""``run --listen`` on an address it cannot listen on says so in one line, not a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ambrosia_edge.transports.tcp import TcpTransport

from ambrosia_edge.errors import AmbrosiaError, ListenError

APP = """\
from ambrosia_edge import Immortal

class Idle(Immortal):
    pass
"""


@pytest.fixture
def occupied() -> tuple[str, int]:
    """An address a listening socket of this process holds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()


def test_run_on_an_address_in_use_prints_one_line(
    tmp_path: Path, occupied: tuple[str, int]
) -> None:
    host, port = occupied
    (tmp_path / "idle.py").write_text(APP)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "ambrosia_edge", "run", "idle.py:Idle", "--name", "idle"),
            *("--log", str(tmp_path / "log"), "--listen", f"{host}:{port}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines == [
        f"ambrosia-edge: error: cannot listen on {host}:{port}: address already in use "
        "(another process holds it; stop it or pick another --listen port)"
    ]


@pytest.mark.anyio
async def test_serve_raises_a_listen_error_naming_the_address(occupied: tuple[str, int]) -> None:
    host, port = occupied

    async def handler(link: object) -> None:
        raise AssertionError("nothing connects")

    with pytest.raises(ListenError, match=f"cannot listen on {host}:{port}: ") as caught:
        await TcpTransport().serve(host, port, handler)
    assert isinstance(caught.value, AmbrosiaError)
    assert caught.value.code == "listen"
