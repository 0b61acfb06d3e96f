"""Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools Protocol: open a
page, evaluate JavaScript in it, take a screenshot. Started in its own process group and
always stopped."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.conftest import free_port
from tests.e2e.procs import wait_for
from tests.observability.test_dashboards import stop_group


def chromium_binary() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is not installed: `apt-get install chromium` (scripts/bootstrap-test-deps does)"
    return binary


class Browser:
    """One page of a fresh headless Chromium (its own profile in `workdir`)."""

    def __init__(self, workdir: Path, width: int = 1280, height: int = 1400) -> None:
        self._workdir = workdir
        self._size = (width, height)
        self._ids = itertools.count(1)
        self._popen: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Browser:
        port = free_port()
        with (self._workdir / "chromium.log").open("wb") as log:
            self._popen = subprocess.Popen(
                [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--no-first-run",
                 f"--remote-debugging-port={port}", f"--user-data-dir={self._workdir / 'profile'}",
                 "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._stack.callback(stop_group, self._popen)
        try:
            base = f"http://127.0.0.1:{port}"

            def page_target() -> str | None:
                assert self._popen is not None and self._popen.poll() is None, "chromium exited"
                pages = [t for t in httpx.get(f"{base}/json/list").json() if t["type"] == "page"]
                return pages[0]["webSocketDebuggerUrl"] if pages else None

            ws_url = wait_for(page_target, 60, "chromium's DevTools endpoint", self._log, 0.2)
            self._ws = self._stack.enter_context(connect(ws_url, max_size=None, open_timeout=30))
            width, height = self._size
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()

    def _log(self) -> str:
        return (self._workdir / "chromium.log").read_text(errors="replace")[-2000:]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; events arriving meanwhile are skipped."""
        assert self._ws is not None
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == call_id:
                assert "error" not in message, (method, message["error"])
                return message["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        wait_for(lambda: self.evaluate("document.readyState") == "complete", 30,
                 f"{url} to load", self._log, 0.1)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, (expression, result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(png)
        return png
