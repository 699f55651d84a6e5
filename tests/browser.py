"""Test helpers for runtimes outside this Python: headless Chromium, a local page server, npm packages.

A tool a test needs is installed here (Debian's `chromium` with apt-get, npm packages into the cache)
or the test fails with a message saying how to install it; nothing is skipped silently.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _apt_install(package: str) -> None:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        subprocess.run([*sudo, *cmd], check=True, capture_output=True, timeout=900, env=env)


@functools.cache
def chromium() -> str:
    """The path of a Chromium binary, installed with apt-get (Debian's `chromium`) when missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    try:
        _apt_install("chromium")
    except (OSError, subprocess.SubprocessError) as e:
        pytest.fail(f"this test runs exported policies in headless Chromium, which is not installed and could not "
                    f"be installed ({e}); install it with `sudo apt-get install chromium` (Debian/Ubuntu) or run "
                    "./dev.sh test, which installs it")
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


def npm_package(name: str, version: str) -> Path:
    """The directory of npm package `name@version` (puffer's cache, installed with npm when missing)."""
    from puffer.errors import ExportError
    from puffer.export.web import npm_package as install

    try:
        return install(name, version)
    except ExportError as e:
        pytest.fail(str(e))


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the page's directory; a POST to /result hands the page's JSON body to the test."""

    server: Any

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()
        self.server.result = body
        self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output clean


def run_page(directory: Path, page: str, timeout: float = 120.0) -> dict[str, Any]:
    """Open `page` of `directory` (served on 127.0.0.1) in headless Chromium; the JSON the page POSTs to
    /result."""
    handler = functools.partial(_Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.result, server.done = None, threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    profile = tempfile.mkdtemp(prefix="puffer-chromium-")
    url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
    proc = subprocess.Popen([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if not server.done.wait(timeout):
            proc.kill()
            stderr = proc.communicate(timeout=10)[1].decode(errors="replace")[-2000:]
            pytest.fail(f"{page} sent no result within {timeout:.0f} s; Chromium's stderr:\n{stderr}")
        return json.loads(server.result)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # Chromium's own helper processes are in its session
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
