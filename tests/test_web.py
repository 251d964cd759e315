"""The web page (``--ui``): its forms, its routes over a real socket on both event loops, who
may send impulses through it, and that its web stack is imported only when it is configured.

The page in a real browser is tests/test_web_browser.py.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from ambrosia_edge.transports.web import WebSource
from apps.dashboard import Thermostat

from ambrosia_edge import Immortal, impulse
from ambrosia_edge.config import Settings, load_settings
from ambrosia_edge.errors import ConfigError
from ambrosia_edge.impulse_forms import FormError, forms_of, parse_arguments
from ambrosia_edge.kinds import PeerAddress
from ambrosia_edge.observe import MAX_ITEMS, state_tree
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.testing import eventually
from ambrosia_edge.ui_options import UI_TOKEN_ENV, UiOptions, is_loopback

# ---------------------------------------------------------------------------------------------
# Forms from signatures, and what a person typed turned into arguments


class Typed(Immortal):
    @impulse
    def every(
        self,
        n: int,
        x: float,
        text: str,
        flag: bool,
        raw: bytes,
        value: dict[str, Any],
        maybe: int | None = None,
        named: str = "kitchen",
    ) -> None:
        """Takes one of each.

        (More words the form does not show.)
        """

    @impulse
    def bare(self, anything, *rest: int, **more: int) -> None:  # type: ignore[no-untyped-def]
        pass


def test_a_form_per_impulse_is_built_from_its_annotations() -> None:
    forms = forms_of(Typed)
    assert list(forms) == ["bare", "every"]
    every = {f.name: f for f in forms["every"].fields}
    assert {name: f.kind for name, f in every.items()} == {
        "n": "int",
        "x": "float",
        "text": "str",
        "flag": "bool",
        "raw": "bytes",
        "value": "json",
        "maybe": "int",
        "named": "str",
    }
    assert every["maybe"].optional and not every["n"].optional
    assert every["named"].as_json()["default"] == "kitchen"
    assert every["named"].as_json()["required"] is False
    assert every["n"].as_json()["required"] is True
    assert forms["every"].doc == "Takes one of each."
    # no annotation: JSON; *args and **kwargs have no field
    assert [(f.name, f.kind) for f in forms["bare"].fields] == [("anything", "json")]


def test_typed_values_become_arguments() -> None:
    form = forms_of(Typed)["every"]
    typed = {
        "n": "42",
        "x": "2.5",
        "text": "",
        "flag": "true",
        "raw": "héllo",
        "value": '{"a": [1, 2]}',
        "maybe": "",
        "named": "",
    }
    assert parse_arguments(form, typed) == {
        "n": 42,
        "x": 2.5,
        "text": "",
        "flag": True,
        "raw": "héllo".encode(),
        "value": {"a": [1, 2]},
    }  # maybe and named: left empty, so their defaults
    # a script may send the typed JSON values themselves
    scripted = {"n": 7, "x": 1, "text": "t", "flag": False, "raw": "r", "value": [1]}
    assert parse_arguments(form, scripted)["x"] == 1.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n": "4.5"}, "every(): n must be a whole number, got '4.5'"),
        ({"x": "warm"}, "every(): x must be a number, got 'warm'"),
        ({"x": "nan"}, "x must be a number, got 'nan' (not a finite number)"),
        ({"flag": "yes"}, "every(): flag must be true or false, got 'yes'"),
        ({"value": "{a: 1}"}, "every(): value must be a JSON value, got '{a: 1}'"),
        ({"n": True}, "n must be a whole number, got True"),
        ({"n": ""}, "every(): n is required (a whole number)"),
        ({"colour": "red"}, "every() has no parameter 'colour' (its parameters: n, x,"),
    ],
)
def test_a_wrong_value_names_the_method_and_the_field(values: dict[str, Any], message: str) -> None:
    good = {"n": "1", "x": "1", "text": "t", "flag": "false", "raw": "r", "value": "1"}
    with pytest.raises(FormError) as caught:
        parse_arguments(forms_of(Typed)["every"], {**good, **values})
    assert message in str(caught.value)


def test_arguments_must_be_an_object() -> None:
    with pytest.raises(FormError, match="must be a JSON object"):
        parse_arguments(forms_of(Typed)["every"], [1, 2])


# ---------------------------------------------------------------------------------------------
# The state as a tree


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_the_state_tree_is_json_and_bounded() -> None:
    state = {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5),
        "raw": b"\x00ab",
        "tags": {"b", "a"},
        "point": Point(1, 2),
        "many": list(range(MAX_ITEMS + 5)),
        "nan": float("nan"),
        "nested": {1: {"deep": (1, 2)}},
    }
    tree = state_tree(state)
    json.dumps(tree, allow_nan=False)
    assert tree["when"] == "2026-01-02T03:04:05"
    assert tree["raw"] == "b'\\x00ab'"
    assert tree["tags"] == ["a", "b"]
    assert tree["point"] == {"": "Point", "x": 1, "y": 2}
    assert len(tree["many"]) == MAX_ITEMS + 1 and tree["many"][-1] == "… 5 more"
    assert tree["nan"] == "nan"
    assert tree["nested"] == {"1": {"deep": [1, 2]}}


# ---------------------------------------------------------------------------------------------
# Settings


def test_ui_is_off_unless_given_and_read_from_flags_and_files(tmp_path: Path) -> None:
    assert load_settings(None, target="counter.py:Counter").ui is None
    flagged = load_settings(None, target="counter.py:Counter", ui="127.0.0.1:8080")
    assert flagged.ui == PeerAddress("127.0.0.1", 8080)
    config = tmp_path / "app.toml"
    config.write_text('target = "counter.py:Counter"\nui = "0.0.0.0:8080"\nui_token = "s3cret"\n')
    filed = load_settings(config)
    assert filed.ui == PeerAddress("0.0.0.0", 8080) and filed.ui_token == "s3cret"
    assert "s3cret" not in repr(filed)
    with pytest.raises(ConfigError, match=r"--ui: port 'x' is not a number.*127\.0\.0\.1:8080"):
        load_settings(None, target="counter.py:Counter", ui="127.0.0.1:x")


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.4.5.6", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.4", "::", "pi.local"))


class _Seen:
    name = "seen"


def test_beyond_loopback_a_token_is_needed_and_made_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(UI_TOKEN_ENV, raising=False)
    on_loopback = WebSource(UiOptions(ui=PeerAddress("127.0.0.1", 8080)), _Seen())  # type: ignore[arg-type]
    assert on_loopback.token is None and on_loopback.url == "http://127.0.0.1:8080/"
    wide = WebSource(UiOptions(ui=PeerAddress("0.0.0.0", 8080)), _Seen())  # type: ignore[arg-type]
    assert wide.token is not None and len(wide.token) >= 24 and wide.generated
    assert wide.url == f"http://0.0.0.0:8080/?token={wide.token}"
    given = WebSource(UiOptions(ui=PeerAddress("::", 8080), ui_token="t0k"), _Seen())  # type: ignore[arg-type]
    assert given.token == "t0k" and given.url == "http://[::]:8080/?token=t0k"
    monkeypatch.setenv(UI_TOKEN_ENV, "from-env")
    assert WebSource(UiOptions(ui=PeerAddress("10.0.0.2", 80)), _Seen()).token == "from-env"  # type: ignore[arg-type]
    # a token given on loopback is asked for too (other users of the machine reach loopback)
    assert WebSource(UiOptions(ui=PeerAddress("127.0.0.1", 80)), _Seen()).token == "from-env"  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The routes, over a real socket, on both event loops

pytestmark = pytest.mark.anyio


class Quiet(Thermostat):
    """Ticks only when a test says so."""

    tick_every = 0.0


@asynccontextmanager
async def served(
    tmp_path: Path, cls: type[Immortal] = Quiet, **ui: Any
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = Settings(
        target="tests:inprocess",
        name="thermostat",
        log=str(tmp_path / "log"),
        ui=PeerAddress("127.0.0.1", 0),
        **ui,
    )
    runtime = Runtime(cls, settings)
    web = runtime.sources[-1]
    assert isinstance(web, WebSource)
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.serve)
        assert web.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.port}") as client:
            yield runtime, client
        tg.cancel_scope.cancel()


def thermostat(runtime: Runtime) -> Thermostat:
    obj = runtime.immortal
    assert isinstance(obj, Thermostat)
    return obj


async def send(client: httpx.AsyncClient, method: str, **args: Any) -> httpx.Response:
    return await client.post(f"/api/impulse/{method}", json={"args": args})


async def test_the_page_and_its_snapshot(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, client):
        page = await client.get("/")
        assert page.status_code == 200 and "ui.js" in page.text
        assert page.headers["content-type"].startswith("text/html")
        assert (await client.get("/ui.js")).status_code == 200
        assert (await client.get("/ui.css")).status_code == 200
        snap = (await client.get("/api/snapshot")).json()
        overview = snap["overview"]
        assert overview["name"] == "thermostat" and overview["role"] == "primary"
        assert overview["epoch"] == 1 and overview["chunk"] == 1
        # the first checkpoint is taken at the start and stored by a task of its own
        for _ in range(300):
            if (await client.get("/api/snapshot")).json()["overview"]["checkpoints"] == [1]:
                break
            await anyio.sleep(0.01)
        else:
            raise AssertionError("the first checkpoint never showed")
        assert snap["state"]["target"] == 20.0 and snap["token_required"] is False
        assert [f["method"] for f in snap["forms"]] == [
            "configure",
            "fail",
            "press",
            "set_target",
            "tick",
        ]


async def test_an_impulse_from_a_form_is_answered_once_durable_and_runs_once(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as (runtime, client):
        pages = runtime.coordinator.next_page
        answer = await send(client, "press", times="3")
        assert answer.status_code == 200, answer.text
        assert answer.json()["ok"] is True
        assert runtime.coordinator.next_page > pages  # answered once in the log
        await send(client, "set_target", celsius="21.5", room="kitchen")
        await eventually(lambda: thermostat(runtime).rooms == {"kitchen": 21.5})
        assert thermostat(runtime).presses == [3]
        snap = (await client.get("/api/snapshot")).json()
        assert snap["state"]["presses"] == [3] and snap["overview"]["impulses"] == 2


@pytest.mark.parametrize(
    ("method", "body", "status", "message"),
    [
        ("press", {"args": {"times": "many"}}, 400, "press(): times must be a whole number"),
        ("press", {"args": {}}, 400, "press(): times is required"),
        ("press", {"args": {"times": "1", "extra": "2"}}, 400, "has no parameter 'extra'"),
        ("read", {"args": {}}, 404, "no @impulse method 'read' (known: configure, fail"),
        ("nope", {"args": {}}, 404, "thermostat has no @impulse method 'nope'"),
        ("configure", {"args": {"schedule": "{bad"}}, 400, "schedule must be a JSON value"),
        ("press", "not an object", 400, "must be a JSON object"),
    ],
)
async def test_bad_input_is_refused_with_a_message_and_the_immortal_runs_on(
    tmp_path: Path, method: str, body: Any, status: int, message: str
) -> None:
    async with served(tmp_path) as (runtime, client):
        answer = await client.post(f"/api/impulse/{method}", json=body)
        assert answer.status_code == status
        assert answer.json()["ok"] is False and message in answer.json()["error"]
        assert (await send(client, "press", times=1)).status_code == 200
        await eventually(lambda: thermostat(runtime).presses == [1])


async def test_a_request_that_is_not_json_is_refused(tmp_path: Path) -> None:
    async with served(tmp_path) as (runtime, client):
        as_form = await client.post("/api/impulse/press", data={"times": "1"})
        assert as_form.status_code == 415 and "application/json" in as_form.json()["error"]
        broken = await client.post(
            "/api/impulse/press", content=b"{", headers={"content-type": "application/json"}
        )
        assert broken.status_code == 400 and "not JSON" in broken.json()["error"]
        huge = {"args": {"times": "1" * (300 * 1024)}}
        too_large = await client.post("/api/impulse/press", json=huge)
        assert too_large.status_code == 413 and "over 262144 bytes" in too_large.json()["error"]
        assert thermostat(runtime).presses == []


async def test_an_impulse_that_fails_is_shown_and_the_immortal_runs_on(tmp_path: Path) -> None:
    async with served(tmp_path) as (runtime, client):
        assert (await send(client, "fail", reason="the valve is stuck")).status_code == 200

        async def shown() -> list[dict[str, Any]]:
            recent: list[dict[str, Any]] = (await client.get("/api/snapshot")).json()["recent"]
            return recent

        for _ in range(200):
            recent = await shown()
            if recent:
                break
            await anyio.sleep(0.01)
        assert recent[-1]["level"] == "error"
        assert "Quiet.fail raised ValueError: the valve is stuck" in recent[-1]["message"]
        assert (await send(client, "press", times=2)).status_code == 200
        await eventually(lambda: thermostat(runtime).presses == [2])


async def test_another_site_and_another_host_name_are_refused(tmp_path: Path) -> None:
    async with served(tmp_path) as (runtime, client):
        foreign = await client.post(
            "/api/impulse/press",
            json={"args": {"times": 1}},
            headers={"origin": "http://evil.example"},
        )
        assert foreign.status_code == 403
        rebound = await client.get("/api/snapshot", headers={"host": "evil.example:8080"})
        assert rebound.status_code == 421 and "loopback" in rebound.json()["error"]
        same = await client.post(
            "/api/impulse/press",
            json={"args": {"times": 1}},
            headers={"origin": f"http://{client.base_url.netloc.decode()}"},
        )
        assert same.status_code == 200
        await eventually(lambda: thermostat(runtime).presses == [1])


async def test_with_a_token_every_api_request_needs_it(tmp_path: Path) -> None:
    async with served(tmp_path, ui_token="let-me-in") as (runtime, client):
        assert (await client.get("/")).status_code == 200  # the page itself holds nothing
        none = await send(client, "press", times=1)
        assert none.status_code == 401 and "no token" in none.json()["error"]
        wrong = await client.post(
            "/api/impulse/press",
            json={"args": {"times": 1}},
            headers={"authorization": "Bearer let-me-out"},
        )
        assert wrong.status_code == 401 and "a wrong token" in wrong.json()["error"]
        assert (await client.get("/api/snapshot")).status_code == 401
        assert (await client.get("/api/events")).status_code == 401
        right = await client.post(
            "/api/impulse/press",
            json={"args": {"times": 5}},
            headers={"authorization": "Bearer let-me-in"},
        )
        assert right.status_code == 200
        snap = await client.get("/api/snapshot", params={"token": "let-me-in"})
        assert snap.json()["token_required"] is True
        await eventually(lambda: thermostat(runtime).presses == [5])


class Ticking(Thermostat):
    tick_every = 0.01


async def test_open_pages_get_live_pictures(tmp_path: Path) -> None:
    # read as raw bytes off the socket: httpx's streams leave async generators behind on trio
    async with served(tmp_path, cls=Ticking) as (_, client):
        port = client.base_url.port
        assert port is not None
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            text = ""
            with anyio.fail_after(10):
                while len(re.findall(r"event: overview\ndata: (.*)\n", text)) < 3:
                    text += (await stream.receive()).decode()
        assert "content-type: text/event-stream" in text.lower()
        seen = [
            json.loads(d)["impulses"] for d in re.findall(r"event: overview\ndata: (.*)\n", text)
        ]
        assert seen == sorted(seen) and seen[-1] > seen[0]
        assert "event: state\ndata: {" in text


async def test_a_taken_port_is_said_plainly_and_the_immortal_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(
            target="tests:inprocess",
            name="thermostat",
            log=str(tmp_path / "log"),
            ui=PeerAddress("127.0.0.1", port),
        )
        runtime = Runtime(Quiet, settings)
        async with anyio.create_task_group() as tg:
            await tg.start(runtime.serve)
            runtime.immortal.this.fork.press(7)
            await eventually(lambda: thermostat(runtime).presses == [7])
            tg.cancel_scope.cancel()
    said = [r for r in caplog.records if "no web page" in r.getMessage()]
    assert said and said[0].exc_info is None
    assert (
        f"--ui: cannot listen on 127.0.0.1:{port}: Address already in use" in said[0].getMessage()
    )


# ---------------------------------------------------------------------------------------------
# Startup cost


def _imported_after(code: str) -> list[str]:
    probe = (
        f"import sys\n{code}\n"
        "print(sorted(m for m in ('starlette', 'hypercorn', 'ambrosia_edge.transports.web') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    imported: list[str] = json.loads(result.stdout.splitlines()[-1].replace("'", '"'))
    return imported


def test_the_web_stack_is_imported_only_when_the_page_is_asked_for(tmp_path: Path) -> None:
    make = (
        "from ambrosia_edge.config import Settings\n"
        "from ambrosia_edge.runtime import Runtime\n"
        "from ambrosia_edge import Immortal\n"
        "from ambrosia_edge.kinds import PeerAddress\n"
        "class A(Immortal): pass\n"
        f"settings = Settings(target='a.py:A', name='a', log={str(tmp_path / 'a')!r}{{ui}})\n"
        "Runtime(A, settings)"
    )
    assert _imported_after(make.format(ui="")) == []
    with_ui = make.format(ui=", ui=PeerAddress('127.0.0.1', 0)")
    assert _imported_after(with_ui) == ["ambrosia_edge.transports.web", "hypercorn", "starlette"]


# ---------------------------------------------------------------------------------------------
# Beyond loopback, for real: in a network namespace of the test's own, on an address of its lo

BEYOND = "10.254.0.1"
_BEYOND_SCRIPT = """
import json, logging, sys, tempfile
import anyio, httpx
from apps.dashboard import Thermostat
from ambrosia_edge.config import Settings
from ambrosia_edge.kinds import PeerAddress
from ambrosia_edge.runtime import Runtime

class Quiet(Thermostat):
    tick_every = 0.0

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append(record.getMessage())

logging.getLogger("ambrosia_edge").addHandler(Keep())
logging.getLogger("ambrosia_edge").setLevel(logging.INFO)

async def main():
    settings = Settings(target="t:Quiet", name="thermostat", log=tempfile.mkdtemp() + "/log",
                        ui=PeerAddress(sys.argv[1], 0))
    runtime = Runtime(Quiet, settings)
    web = runtime.sources[-1]
    out = {}
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.serve)
        base = f"http://{sys.argv[1]}:{web.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            press = {"args": {"times": 1}}
            out["none"] = (await client.post("/api/impulse/press", json=press)).status_code
            out["wrong"] = (await client.post("/api/impulse/press", json=press,
                            headers={"authorization": "Bearer nope"})).status_code
            out["read"] = (await client.get("/api/snapshot")).status_code
            out["page"] = (await client.get("/")).status_code
            right = {"authorization": f"Bearer {web.token}"}
            out["right"] = (await client.post("/api/impulse/press", json=press,
                            headers=right)).status_code
            out["foreign_host"] = (await client.post("/api/impulse/press", json=press,
                                   headers={**right, "host": "pi.local:8080"})).status_code
            while runtime.immortal.presses != [1, 1]:
                await anyio.sleep(0.01)
            out["presses"] = runtime.immortal.presses
        tg.cancel_scope.cancel()
    out["token"] = web.token
    out["lines"] = lines
    print(json.dumps(out))

anyio.run(main)
"""


def test_beyond_loopback_the_form_refuses_a_request_without_the_token(tmp_path: Path) -> None:
    if not (shutil.which("unshare") and shutil.which("ip")) and not os.environ.get("CI"):
        pytest.skip("needs unshare (util-linux) and ip (iproute2) for a network namespace")
    setup = f"ip link set lo up && ip addr add {BEYOND}/32 dev lo"
    script = tmp_path / "beyond.py"
    script.write_text(_BEYOND_SCRIPT)
    command = f'{setup} && exec "$0" "$1" "$2"'
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", command, sys.executable, str(script), BEYOND],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != UI_TOKEN_ENV},
            "PYTHONPATH": str(Path(__file__).parent),
        },
    )
    if (
        result.returncode
        and "Operation not permitted" in result.stderr
        and not os.environ.get("CI")
    ):
        pytest.skip(f"no network namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    # without the token, or with a wrong one: refused; with it: sent, and run once
    assert out["none"] == 401 and out["wrong"] == 401 and out["read"] == 401
    assert out["page"] == 200 and out["right"] == 200 and out["foreign_host"] == 200
    assert out["presses"] == [1, 1]
    token = out["token"]
    assert len(token) >= 24
    announced = [line for line in out["lines"] if "web page at" in line]
    assert announced and f"?token={token}" in announced[0] and BEYOND in announced[0]
