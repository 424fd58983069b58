"""Headless Chromium for tests where a browser is the client, driven over the DevTools protocol.

`Browser.start(folder)` runs the Debian `chromium` (or another Chromium on PATH) headless in
its own process group with a throwaway profile, reads the DevTools address from the profile's
DevToolsActivePort file, and speaks CDP over a websockets connection. `open(url)` gives a
`Page`: its `evaluate` runs JavaScript and returns the JSON value, and whatever the page
passes to `report(json)` (a DevTools binding) lands in `page.log` as it happens, so tests
wait on it with tests.support.until. `stop()` closes the browser and kills its process
group. `skip_reason()` says why these tests cannot run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.support import SCALE

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
START_TIMEOUT = 30.0


def executable() -> str | None:
    """The Chromium to run, or None."""
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def trust_ca(home: Path, ca_pem: Path, name: str = "wsconsole proxy") -> str | None:
    """Trust a CA in the NSS store Chromium reads under `home` (as docs/proxy.md tells users);
    returns why it could not be done (no certutil), or None."""
    certutil = shutil.which("certutil")
    if certutil is None:
        return "no certutil (Debian: apt-get install libnss3-tools)"
    store = home / ".pki" / "nssdb"
    store.mkdir(parents=True, exist_ok=True)
    for args in (["-N", "--empty-password"], ["-A", "-t", "C,,", "-n", name, "-i", str(ca_pem)]):
        subprocess.run([certutil, "-d", f"sql:{store}", *args], check=True, capture_output=True,
                       timeout=30)
    return None


def skip_reason() -> str | None:
    """Why browser tests cannot run here, or None."""
    if executable() is None:
        return ("no Chromium on PATH (Debian: apt-get install chromium; `make test` installs "
                "it when run as root)")
    return None


class CDPError(RuntimeError):
    """The browser answered a DevTools command with an error."""


class Browser:
    """One headless Chromium and its DevTools connection."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: ClientConnection) -> None:
        self.proc = proc
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self.pages: dict[str, Page] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="cdp-reader")

    @classmethod
    async def start(cls, folder: Path, *args: str, home: Path | None = None) -> Browser:
        """Run Chromium with a profile in `folder` and connect to its DevTools.

        `home` is the HOME it runs with (its NSS certificate store is `home/.pki/nssdb`).
        """
        path = executable()
        assert path is not None, skip_reason()
        flags = ["--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                 "--disable-extensions", "--disable-background-networking", "--mute-audio",
                 "--remote-debugging-port=0", f"--user-data-dir={folder}", *args]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        proc = await asyncio.create_subprocess_exec(
            path, *flags, "about:blank", stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "HOME": str(home)} if home is not None else None)
        port_file = folder / "DevToolsActivePort"
        try:
            async with asyncio.timeout(START_TIMEOUT * SCALE):
                while not (port_file.exists() and len(port_file.read_text().split()) == 2):
                    if proc.returncode is not None:
                        raise RuntimeError(f"chromium exited with {proc.returncode}")
                    await asyncio.sleep(0.05)
                port, path_part = port_file.read_text().split()
                ws = await connect(f"ws://127.0.0.1:{port}{path_part}", max_size=None,
                                   ping_interval=None)
        except BaseException:
            _kill(proc)
            raise
        return cls(proc, ws)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                message = orjson.loads(raw)
                if message.get("method") == "Runtime.bindingCalled":
                    page = self.pages.get(message.get("sessionId", ""))
                    if page is not None:
                        page.log.append(orjson.loads(message["params"]["payload"]))
                    continue
                waiter = self._waiting.pop(message.get("id", -1), None)
                if waiter is not None and not waiter.done():
                    if "error" in message:
                        waiter.set_exception(CDPError(str(message["error"])))
                    else:
                        waiter.set_result(message.get("result", {}))

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session: str | None = None, timeout: float = 20.0) -> dict[str, Any]:
        """One DevTools command; its result."""
        ident = next(self._ids)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send(orjson.dumps(message).decode())
        return await asyncio.wait_for(waiter, timeout * SCALE)

    async def open(self, url: str) -> Page:
        """A new tab showing `url` (loaded when this returns)."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        session = attached["sessionId"]
        page = self.pages[session] = Page(self, session)
        await self.send("Runtime.enable", {}, session)
        await self.send("Runtime.addBinding", {"name": "report"}, session)
        await self.send("Page.enable", {}, session)
        await self.send("Page.navigate", {"url": url}, session)
        return page

    async def stop(self) -> None:
        """Close the browser and make sure its whole process group is gone."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 5)
        await self.ws.close()
        self._reader.cancel()
        _kill(self.proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 10)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class Page:
    """One tab: run JavaScript in it; `log` holds what it reported."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.log: list[Any] = []

    def entries(self, kind: str) -> list[dict[str, Any]]:
        """The reported entries whose "t" is `kind`."""
        return [e for e in self.log if isinstance(e, dict) and e.get("t") == kind]

    async def evaluate(self, expression: str, wait: bool = True) -> Any:
        """The JSON value of `expression` (awaited when it is a promise)."""
        result = await self.browser.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": wait,
        }, self.session)
        if "exceptionDetails" in result:
            raise CDPError(str(result["exceptionDetails"].get("exception", result)))
        return result.get("result", {}).get("value")
