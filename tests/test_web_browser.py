"""The web page in a real headless browser: Debian's chromium, driven by Selenium through
Debian's chromedriver, against immortals started through the real CLI.

The page must show counts that change without a reload, send an impulse from its form that is
executed exactly once, and show a refused value on the page. ``.ci/run`` installs chromium and
chromium-driver; elsewhere the test is skipped when they are missing (in CI it fails instead).

``AMBROSIA_UI_SCREENSHOT=docs/ui.png pytest tests/test_web_browser.py`` also saves a picture of
the page, the one the README shows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import REPO, free_port, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None
)
APP = REPO / "tests" / "apps" / "dashboard.py"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver); .ci/run installs them",
)


class Immortal:
    """One ``ambrosia-edge run`` child, stopped or killed by its PID."""

    def __init__(
        self, tmp: Path, name: str, port: int, peer: tuple[str, int], *flags: str, **env: str
    ):
        self.name = name
        self.tmp = tmp
        self.output = tmp / f"{name}.out"
        args = [sys.executable, "-m", "ambrosia_edge", "run", f"{APP}:Thermostat"]
        args += ["--name", name, "--log", str(tmp / name), "--listen", f"127.0.0.1:{port}"]
        self.args = [*args, "--peer", f"{peer[0]}=127.0.0.1:{peer[1]}", *flags]
        self.env = dict(os.environ, AMBROSIA_TEST_TICK="0.05", **env)
        self.start()

    def start(self) -> None:
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp, env=self.env
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def snapshot(base: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(base + "api/snapshot", timeout=5) as answer:
            data: dict[str, Any] = json.load(answer)
            return data
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        pytest.fail(
            "in CI chromium and chromedriver must be there "
            "(apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,1500",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_is_live_and_its_form_sends_an_impulse_once(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ui, first, second = free_port(), free_port(), free_port()
    thermostat = Immortal(
        tmp_path, "thermostat", first, ("hallway", second), "--ui", f"127.0.0.1:{ui}"
    )
    hallway = Immortal(
        tmp_path, "hallway", second, ("thermostat", first), AMBROSIA_TEST_REPORT_TO="thermostat"
    )
    base = f"http://127.0.0.1:{ui}/"
    try:
        wait_for(lambda: snapshot(base), 15, "the web page", thermostat.text)
        assert f"thermostat: web page at {base}" in thermostat.text()

        browser.get(base)
        wait = WebDriverWait(browser, 10)
        count = browser.find_element(By.ID, "impulses")
        wait.until(lambda _: count.text[:1].isdigit())
        browser.execute_script("window.notReloaded = true")
        # live: the count of executed impulses moves without a reload
        before = count.text
        wait.until(lambda _: count.text != before)
        moved = count.text
        wait.until(lambda _: count.text != moved)
        assert browser.execute_script("return window.notReloaded") is True
        assert browser.find_element(By.ID, "role").text == "primary"
        assert browser.find_element(By.ID, "link").text == "live"
        # the peer's links come up both ways
        peers = browser.find_element(By.ID, "peers")
        wait.until(lambda _: len(peers.find_elements(By.CSS_SELECTOR, "td.yes")) == 2)
        calls = browser.find_element(By.ID, "calls")
        wait.until(lambda _: calls.text[:1].isdigit() and int(calls.text.replace(",", "")) > 5)

        # an impulse from the form: answered once logged, executed exactly once
        form = browser.find_element(By.ID, "form-press")
        result = form.find_element(By.CLASS_NAME, "result")
        form.find_element(By.NAME, "times").send_keys("4")
        form.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda _: "logged as impulse" in result.text)
        assert "ok" in result.get_attribute("class")

        def presses() -> list[int]:
            snap = snapshot(base)
            assert snap is not None
            found: list[int] = snap["state"]["presses"]
            return found

        wait_for(lambda: presses() == [4], 10, "the press to be executed", thermostat.text)
        # and shown in the state tree on the page, still without a reload
        wait.until(lambda _: "presses: [1]\n0: 4" in browser.find_element(By.ID, "state").text)

        # SIGKILL and a restart: the page notices, reconnects by itself, and the logged press
        # is there once, replayed, not executed again
        link = browser.find_element(By.ID, "link")
        thermostat.kill()
        wait.until(lambda _: link.text != "live")
        thermostat.start()
        wait.until(lambda _: link.text == "live")
        wait.until(lambda _: "presses: [1]\n0: 4" in browser.find_element(By.ID, "state").text)
        epoch = browser.find_element(By.ID, "epoch")
        wait.until(lambda _: epoch.text == "2")
        assert presses() == [4]

        # bad input: said on the page, nothing sent, the immortal runs on
        field = form.find_element(By.NAME, "times")
        field.clear()
        field.send_keys("lots")
        form.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda _: "times must be a whole number, got 'lots'" in result.text)
        assert "bad" in result.get_attribute("class")
        wait.until(lambda _: "impulse refused" in browser.find_element(By.ID, "recent").text)
        assert presses() == [4]  # still once

        target = browser.find_element(By.ID, "form-set_target")
        target.find_element(By.NAME, "celsius").send_keys("21.5")
        target.find_element(By.NAME, "room").send_keys("kitchen")
        target.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda _: "logged" in target.find_element(By.CLASS_NAME, "result").text)
        wait.until(lambda _: "kitchen: 21.5" in browser.find_element(By.ID, "state").text)

        shot = os.environ.get("AMBROSIA_UI_SCREENSHOT")
        if shot:
            browser.save_screenshot(str(Path(shot).resolve()))
    finally:
        thermostat.stop()
        hallway.stop()
