"""A minimal headless-chromium driver over the Chrome DevTools Protocol, for the browser tests.

Why not Playwright or Selenium: both download or pin their own browser and driver; the tests only
need to open a page, read its text, click and take a screenshot, which the DevTools Protocol does
over one websocket (``websocket-client``) with the chromium CI already installs.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The chromium binary; skips the test when it is missing, fails instead when CI demands services."""
    browser = find_chromium()
    if browser is None:
        if os.environ.get("HQCBENCH_REQUIRE_SERVICES"):
            pytest.fail("chromium is required (HQCBENCH_REQUIRE_SERVICES is set) but not installed")
        pytest.skip("chromium not installed (CI installs it)")
    return browser


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting for a reaper do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            return True
    return False


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a process started with ``process_group=0`` and everything in its process group:
    SIGTERM, then SIGKILL after ``grace_s``. The group matters: chromium forks its renderers, and
    ``mlflow server`` its uvicorn worker and job consumers, which would outlive their parent."""
    pgid = proc.pid
    deadline = time.monotonic() + grace_s
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                return
            time.sleep(0.1)
        deadline = time.monotonic() + 5.0
    proc.poll()


class Chromium:
    """Headless chromium with one page target; use as a context manager so the browser always goes.

    ``--remote-debugging-port=0`` lets chromium pick a free port and write it to
    ``DevToolsActivePort`` in the profile, so parallel tests never race for a port.
    """

    def __init__(self, binary: str, profile: Path, window: tuple[int, int] = (1600, 1000),
                 start_timeout_s: float = 60.0):
        self.binary, self.profile, self.window, self.start_timeout_s = binary, Path(profile), window, start_timeout_s
        self.proc: subprocess.Popen | None = None
        self._ws = None
        self._next_id = 0

    def __enter__(self) -> "Chromium":
        import websocket

        self.profile.mkdir(parents=True, exist_ok=True)
        (self.profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's stale port
        args = [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", f"--window-size={self.window[0]},{self.window[1]}",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-dev-shm-usage", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
        try:
            port, browser_path = self._devtools_endpoint()
            browser = websocket.create_connection(f"ws://127.0.0.1:{port}{browser_path}", timeout=30)
            try:
                self._ws = browser
                target = self.send("Target.createTarget", url="about:blank")["targetId"]
            finally:
                browser.close()
                self._ws = None
            self._ws = websocket.create_connection(f"ws://127.0.0.1:{port}/devtools/page/{target}", timeout=60)
            # the viewport exactly the window size (headless keeps some of it for window chrome otherwise)
            self.send("Emulation.setDeviceMetricsOverride", width=self.window[0], height=self.window[1],
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
            self._ws = None
        if self.proc is not None:
            stop_process(self.proc)

    def _devtools_endpoint(self) -> tuple[int, str]:
        """The port chromium chose and its browser websocket path, once it has written them."""
        path = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.proc.returncode} before it listened")
            if path.is_file():
                lines = path.read_text().splitlines()
                if len(lines) >= 2 and lines[0].strip().isdigit():
                    return int(lines[0]), lines[1].strip()
            time.sleep(0.1)
        raise TimeoutError(f"chromium wrote no DevToolsActivePort within {self.start_timeout_s:.0f} s")

    # ------------------------------------------------------------------ protocol
    def send(self, method: str, **params: Any) -> dict:
        """Call one DevTools method and return its result; events (none are enabled) are dropped."""
        self._next_id += 1
        msg_id = self._next_id
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") != msg_id:
                continue
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply.get("result", {})

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')} "
                               f"{result['exceptionDetails'].get('exception', {}).get('description', '')}")
        return result["result"].get("value")

    def press(self, key: str, code: str, key_code: int) -> None:
        """One key press as the keyboard sends it (e.g. Escape, which closes a popover)."""
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=key_code)

    def type_text(self, text: str) -> None:
        """Text into the focused element through the browser's input path, so the page's own
        (React) handlers see it as typed."""
        self.send("Input.insertText", text=text)

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, expression: str, timeout_s: float, what: str, poll_s: float = 0.5) -> Any:
        """Poll a JavaScript expression until it is truthy; on timeout say what was awaited and show the page."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # the page is still loading its scripts
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; page text:\n"
                                     f"{self.text()[:3000]}")
            time.sleep(poll_s)

    def screenshot(self, path: Path, clip: dict | None = None) -> Path:
        """A PNG of the viewport, or of ``clip`` (x, y, width, height in CSS pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
