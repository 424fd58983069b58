"""Bootstrap of the console window: QApplication first, then the qasync loop, error hooks,
start-up (demo cluster, `--url`, or empty; the agents of other hosts with `--agents-broker`)
and an explicit, bounded shutdown.

`run(options)` is what `wsconsole gui` and `wsconsole screenshot` call; `ConsoleApp` is the
same thing as an object tests drive from their own qasync loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from wsconsole.app.console import Console
from wsconsole.app.errors import ErrorHub
from wsconsole.app.profiles import Profile
from wsconsole.gui.icon import app_icon
from wsconsole.gui.mainwindow import MainWindow
from wsconsole.gui.shots import Shot, take
from wsconsole.harness.agents import AgentsClient
from wsconsole.logs import setup_logging

log = logging.getLogger(__name__)
ORGANIZATION = "wsconsole"
APPLICATION = "wsconsole"
TARGET_CONN = "target"


@dataclass
class GuiOptions:
    """What the command line decides about the window."""

    url: str | None = None  # debug an external server (no harness)
    harness: bool = True  # start the demo cluster (ignored with url)
    stack: str | None = None  # run the user's own nodes (a stack file) instead of the demo
    swarm_clients: int = 20
    tls: bool = False  # the demo cluster serves wss://
    broker_cluster: int = 0  # the demo's broker: a Valkey Cluster of N shards (0: a server)
    settings_path: str | None = None  # an .ini file instead of the user's QSettings
    frame_capacity: int = 1_000_000
    agents_broker: str | None = None  # show (and command) the agents on this broker
    agents_secret: str | None = field(default=None, repr=False)  # their shared secret
    width: int = 1600
    height: int = 1000


def ensure_app() -> QApplication:
    """The QApplication (created once, before any loop or widget)."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setQuitOnLastWindowClosed(False)  # closing goes through our shutdown
    app.setWindowIcon(app_icon())
    return app


@contextlib.contextmanager
def collect_garbage_between_events(interval: float = 0.5) -> Iterator[None]:
    """Python's cycle collector runs only from a timer of the Qt loop while inside, never in
    the middle of a paint: a collection that frees Qt items while a scene paints crashes the
    process (seen in pyqtgraph's AxisItem.paint). pyqtgraph's GarbageCollector defers it with
    the same generation thresholds; on the way out automatic collection is back."""
    from pyqtgraph.util.garbage_collector import GarbageCollector

    collector = GarbageCollector(interval)
    try:
        yield
    finally:
        collector.timer.stop()
        gc.enable()


def make_settings(path: str | None) -> QSettings:
    """QSettings at `path` (ini) or the user's default location for wsconsole."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return QSettings(str(path), QSettings.Format.IniFormat)
    return QSettings(ORGANIZATION, APPLICATION)


class ConsoleApp:
    """The console and its window, started and stopped explicitly."""

    def __init__(self, options: GuiOptions, errors: ErrorHub | None = None) -> None:
        self.options = options
        self.errors = errors or ErrorHub()
        self.console = Console(frame_capacity=options.frame_capacity, errors=self.errors)
        self.window = MainWindow(self.console, make_settings(options.settings_path))
        self.window.resize(options.width, options.height)
        self.closed = asyncio.Event()
        self.window.closing.connect(self.closed.set)
        self.startup: asyncio.Task[None] | None = None
        self.agents: AgentsClient | None = None  # the agents on other hosts, when given

    def start(self) -> None:
        """Show the window and begin the start-up work in the background."""
        self.window.show()
        if self.options.url:
            profile = Profile(name=TARGET_CONN, url=self.options.url)
            if TARGET_CONN in self.console.sessions:
                self.console.sessions[TARGET_CONN].profile = profile
            else:
                self.console.add_session(profile)
            self.startup = self.console.spawn(self.console.connect(TARGET_CONN, profile),
                                              "connect target")
        elif self.options.stack:
            self.startup = self.window.open_stack(self.options.stack, self.options.swarm_clients)
        elif self.options.harness:
            self.startup = self.console.spawn(
                self.console.start_demo(self.options.swarm_clients, tls=self.options.tls,
                                        broker_cluster=self.options.broker_cluster),
                "demo start-up")
        if self.options.agents_broker and self.options.agents_secret:
            self.agents = AgentsClient(self.options.agents_broker, self.options.agents_secret)
            self.window.cluster.agents.attach(self.agents)
            self.console.spawn(self.agents.open(wait=False), "agents")
        self.window.connection.sync_list()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the start-up work finished (True) or failed/timed out (False)."""
        if self.startup is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.startup)
        except Exception:
            return False
        return True

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop everything the console started, then let the window close."""
        self.window.stop_timers()
        if self.startup is not None and not self.startup.done():
            self.startup.cancel()
        if self.agents is not None:
            await self.agents.close()
        try:
            async with asyncio.timeout(timeout):
                await self.console.shutdown()
        except TimeoutError:
            self.errors.report(f"shutdown took longer than {timeout} s; killing what is left")
            self.console._kill_leftovers()
        self.window.allow_close = True
        self.window.close()


def install_hooks(errors: ErrorHub, loop: asyncio.AbstractEventLoop) -> None:
    """Our sys.excepthook (asyncSlot failures go there) and the loop's exception handler."""
    sys.excepthook = errors.excepthook
    loop.set_exception_handler(errors.loop_handler)


async def _main(options: GuiOptions, errors: ErrorHub, screenshot: str | None,
                shot: Shot) -> int:
    app = ConsoleApp(options, errors)
    app.start()
    previous = signal.signal(signal.SIGINT, lambda *_: app.closed.set())
    ticker = QTimer(interval=200)  # lets Python run its signal handlers inside Qt's loop
    ticker.timeout.connect(lambda: None)
    ticker.start()
    code = 0
    try:
        if screenshot is not None:
            problems = shot.problems(list(app.window.docks))
            if problems:
                sys.stderr.write(f"wsconsole: error: {'; '.join(problems)}\n")
                return 2
            code = await take(app, screenshot, shot)
        else:
            await app.closed.wait()
    finally:
        ticker.stop()
        signal.signal(signal.SIGINT, previous)
        await app.shutdown()
    return code


def run(options: GuiOptions, screenshot: str | None = None, shot: Shot | None = None) -> int:
    """Open the window (or render one screenshot, as `shot` plans it: gui/shots.py) and
    return the exit code."""
    if screenshot is not None and not os.environ.get("DISPLAY") and \
            not os.environ.get("WAYLAND_DISPLAY") and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    setup_logging()  # also to the user log folder, rotated (Help > Open log folder)
    import qasync  # after PySide6, so qasync uses the binding already imported

    errors = ErrorHub()
    qapp = ensure_app()
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    install_hooks(errors, loop)
    try:
        with collect_garbage_between_events():
            return loop.run_until_complete(_main(options, errors, screenshot, shot or Shot()))
    finally:
        sys.excepthook = sys.__excepthook__
        loop.close()
