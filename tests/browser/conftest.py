"""Browser tests: the real server in a subprocess, driven by Debian's headless Chromium through Playwright."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("KCIRCUITS_CHROMIUM", "/usr/bin/chromium")
#: The test build of the dashboard (it has the window.__kc hook the tests read): `make frontend-test`.
TEST_STATIC = ROOT / "build" / "static-test"
STATIC_INDEX = TEST_STATIC / "index.html"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
#: Models the server preloads besides its default (the random ones boot in about a second).
PRELOAD = "tiny-gpt2"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(base: str, method: str, path: str, body: dict | None = None, timeout: float = 120) -> tuple[int, object]:
    """A JSON request to the test server: (status, parsed body or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def require_endpoint(base: str, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    """Call an endpoint; fail when its route does not exist (the generic 404/405 for unknown routes)."""
    status, data = http(base, method, path, body)
    generic = isinstance(data, dict) and (data.get("detail") in ("Not Found", "Method Not Allowed") or (
        isinstance(data.get("error"), dict) and data["error"].get("message") in ("Not Found", "Method Not Allowed")))
    assert not (status in (404, 405) and generic), f"endpoint {method} {path} missing ({status})"
    return status, data


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """Base URL of a running `kcircuits serve` (default model smollm2-135m plus tiny-gpt2), ready."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI: `make browser-deps` should have installed Debian's chromium")
        pytest.skip(f"{CHROMIUM} missing: install Debian's chromium (make browser-deps) to run the browser tests")
    if not STATIC_INDEX.exists() or b"/assets/" not in STATIC_INDEX.read_bytes():
        if os.environ.get("CI"):
            pytest.fail("test frontend not built in CI: `make frontend-test` should have built it")
        pytest.skip("test frontend not built: run `make frontend-test`")
    port = _free_port()
    data = tmp_path_factory.mktemp("browser-data")
    env = {**os.environ, "KCIRCUITS_TEST_MODELS": "1", "KCIRCUITS_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "KCIRCUITS_PRELOAD_MODELS": PRELOAD, "KCIRCUITS_DEVICE": "cpu",
           "KCIRCUITS_STATIC_DIR": str(TEST_STATIC)}
    env.setdefault("KCIRCUITS_CACHE_DIR", str(Path.home() / ".kcircuits" / "cache"))
    exe = Path(sys.executable).with_name("kcircuits")
    cmd = [str(exe), "serve", "--port", str(port)] if exe.exists() else [
        sys.executable, "-m", "uvicorn", "--factory", "kcircuits.api.app:create_app", "--port", str(port)]
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited ({proc.returncode}): {(data / 'server.log').read_text()[-2000:]}")
            status, _ = (http(base, "GET", "/readyz", timeout=5) if _port_open(port) else (0, None))
            if status == 200:
                break
            if time.monotonic() > deadline:
                pytest.fail("server not ready after 240 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh context + page on the dashboard; fails the test on uncaught page errors or CSP violations."""
    ctx = browser.new_context(base_url=server, viewport={"width": 1500, "height": 1100})
    ctx.set_default_timeout(30_000)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    try:
        violations = pg.evaluate("() => window.__kc ? window.__kc.cspViolations : []")
    except Exception:  # noqa: BLE001 - page may be gone
        violations = []
    ctx.close()
    assert not errors, f"uncaught page errors: {errors}"
    assert not violations, f"CSP violations: {violations}"


def screenshot(page, name: str, locator=None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (locator or page).screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.fixture
def chromium_args():
    return list(CHROMIUM_ARGS)


def which_chromium() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
