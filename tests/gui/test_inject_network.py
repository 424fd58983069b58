"""Inject and Network panels against a real one-node harness, offscreen.

The console's own ReconnectingClient holds a connection through the balancer; the panels act
through the Console and the supervisor exactly as the window does: a probe case and a node
injection land in the history with their verdicts, the injection makes the console's client
fail and reconnect, network toggles change its measured RTT and reset it, and every action
leaves a fault marker on the Timeline and the plots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support import pid_alive, until
from wsconsole.app.console import CONSOLE_CONN, Console
from wsconsole.app.injector import CLUSTER_VIA
from wsconsole.app.profiles import Profile
from wsconsole.core.lifecycle import State
from wsconsole.gui.panels.faultmarks import FaultMarks
from wsconsole.gui.panels.inject import InjectPanel
from wsconsole.gui.panels.network import NetworkPanel
from wsconsole.gui.panels.plots import PlotsPanel

from .conftest import run


async def with_console(body: Callable[[Console], Awaitable[Any]]) -> Any:
    """A Console with a one-node demo cluster and its own client OPEN; all stopped after."""
    from wsconsole.harness.cluster import ClusterConfig

    console = Console(sample_interval=0.25)
    pids: set[int] = set()
    try:
        cluster = await console.start_cluster(ClusterConfig.demo(nodes=1, health_interval=0.25))
        pids = console.started_pids()
        console.add_session(Profile(
            name=CONSOLE_CONN, url=cluster.url, token=cluster.token(CONSOLE_CONN, ["*"]),
            harness=True, rooms="demo", backoff_initial=0.2, backoff_cap=1.0,
            backoff_jitter=0.1, ping_interval=0.5, ping_timeout=1.0,
        ))
        await console.connect(CONSOLE_CONN)
        session = console.sessions[CONSOLE_CONN]
        await until(lambda: session.state is State.OPEN, "the console's session to open", 20)
        return await body(console)
    finally:
        pids |= console.started_pids()
        await console.shutdown()
        assert not [pid for pid in pids if pid_alive(pid)]


def test_inject_panel_runs_both_directions(qloop) -> None:  # type: ignore[no-untyped-def]
    async def body(console: Console) -> None:
        panel = InjectPanel(console, refresh_ms=50)
        session = console.sessions[CONSOLE_CONN]
        await until(lambda: panel.via_box.count() == 2, "both sources in the Via box", 5)

        # client to server through the balancer: the node fails it with 1002
        assert panel.select_case("rsv1-set")
        assert "RFC 6455 §5.2" in panel.case_info.text() and "fail 1002" in panel.case_info.text()
        panel.via_box.setCurrentText(CLUSTER_VIA)
        assert panel.run()
        await until(lambda: panel.table.rowCount() == 1, "the first injection's row", 20)
        assert panel.table.item(0, 1).text() == "C→S"
        assert panel.table.item(0, 6).text().startswith("close 1002")
        assert panel.table.item(0, 7).text() == "pass"

        # an application-level case through the console session's own URL and token
        assert panel.select_case("app-unknown-type")
        panel.via_box.setCurrentText(CONSOLE_CONN)
        assert panel.run()
        await until(lambda: panel.table.rowCount() == 2, "the second injection's row", 20)
        assert panel.table.item(0, 7).text() == "pass", panel.table.item(0, 6).text()

        # server to client: the node sends invalid UTF-8 to the console's own connection
        panel.s2c.setChecked(True)
        assert panel.case_box.findData("unmasked-client-frame") < 0  # client-only case hidden
        assert panel.select_case("invalid-utf8-text")
        await until(lambda: panel.target_box.findData("session:console") >= 0,
                    "the console session among the targets", 10)
        panel.set_target("session:console")
        before = len(console.timeline.states(CONSOLE_CONN))
        assert panel.run()
        await until(lambda: panel.table.rowCount() == 3, "the third injection's row", 20)
        assert panel.table.item(0, 1).text() == "S→C"
        assert panel.table.item(0, 6).text().startswith("closed 1007"), panel.table.item(0, 6)
        assert panel.table.item(0, 7).text() == "pass"

        def reconnected() -> bool:
            later = console.timeline.states(CONSOLE_CONN)[before:]
            return State.RECONNECTING in later and later[-1] is State.OPEN

        await until(reconnected, "a reconnect after the injected frame", 20,
                    detail=lambda: console.timeline.states(CONSOLE_CONN)[before:])
        assert session.state is State.OPEN
        labels = [m.label for m in console.timeline.faults]
        assert "inject rsv1-set → cluster" in labels
        assert "inject app-unknown-type → console" in labels
        assert "inject invalid-utf8-text ← n1" in labels

        # a target that is not there: the node's message, shown in the panel, no new row
        panel.target_box.setEditText("ghost")
        assert panel.run()
        await until(lambda: "no conn or room 'ghost'" in panel.message.text(),
                    "the unknown-target message", 10)
        assert panel.table.rowCount() == 3
        panel.timer.stop()

    run(qloop, with_console(body), timeout=90)


def test_network_panel_toggles_are_felt_and_marked(qloop) -> None:  # type: ignore[no-untyped-def]
    async def body(console: Console) -> None:
        panel = NetworkPanel(console, refresh_ms=50)
        plots = PlotsPanel(console.series, refresh_ms=100, pull=console.sample_clients)
        marks = FaultMarks(plots, console.timeline, refresh_ms=50)
        session = console.sessions[CONSOLE_CONN]
        await until(lambda: panel.target_box.count() == 2, "the targets 'all' and n1", 5)
        await until(lambda: session.rtt is not None, "a first round-trip time", 10)

        # bad parameters are refused in place, nothing is sent
        panel.params["latency"].setText("lots")
        panel.toggles["latency"].setChecked(True)
        assert "not a number" in panel.message.text()
        assert not panel.toggles["latency"].isChecked() and not panel.active

        # latency on n1: the console's measured RTT grows by about twice the delay
        panel.target_box.setCurrentText("n1")
        panel.params["latency"].setText("150ms")
        panel.toggles["latency"].setChecked(True)
        await until(lambda: ("n1", "latency") in panel.active, "latency active on n1", 10,
                    detail=lambda: panel.message.text())
        assert "n1: latency 150ms" in panel.summary.text()
        await until(lambda: (session.rtt or 0) > 0.25,
                    "the added latency in the round-trip time", 20, detail=lambda: session.rtt)
        await until(lambda: marks.count() >= 1, "a fault mark on the plot", 5)
        panel.toggles["latency"].setChecked(False)
        await until(lambda: not panel.active, "no active fault", 10)
        await until(lambda: (session.rtt or 1) < 0.2,
                    "the round-trip time back to normal", 20, detail=lambda: session.rtt)

        # a one-shot reset on all: the client reconnects, the toggle switches itself off
        before = len(console.timeline.states(CONSOLE_CONN))
        panel.target_box.setCurrentText("all")
        panel.toggles["reset"].setChecked(True)

        def reconnected() -> bool:
            later = console.timeline.states(CONSOLE_CONN)[before:]
            return State.RECONNECTING in later and later[-1] is State.OPEN

        await until(reconnected, "a reconnect after the reset", 20,
                    detail=lambda: console.timeline.states(CONSOLE_CONN)[before:])
        await until(lambda: not panel.toggles["reset"].isChecked(),
                    "the reset toggle to switch itself off", 5)
        labels = [m.label for m in console.timeline.faults]
        assert "net latency 150ms on n1" in labels and "net reset on all" in labels
        assert any(label.startswith("net latency cleared on n1") for label in labels)
        await until(lambda: marks.count() >= 3, "three fault marks on the plot", 5)

        # blackhole, then Clear all
        panel.toggles["blackhole"].setChecked(True)
        await until(lambda: ("all", "blackhole") in panel.active, "the blackhole active on all", 10)
        assert panel.clear_all()
        await until(lambda: not panel.active, "no active fault", 10)
        assert not panel.toggles["blackhole"].isChecked()
        await until(lambda: session.state is State.OPEN, "the session to open again", 20)
        for timer in (panel.timer, plots.timer, marks.timer):
            timer.stop()
        await asyncio.sleep(0)

    run(qloop, with_console(body), timeout=90)


def test_panels_without_a_cluster_probe_a_session_url(qloop, echo_port) -> None:  # type: ignore[no-untyped-def]
    """No harness: the Inject panel probes an external server through a session's URL (a
    plain websockets echo server); node injection and network toggles say plainly why not."""

    async def body() -> None:
        console = Console()
        console.add_session(Profile(name="target", url=f"ws://127.0.0.1:{echo_port}/"))
        inject = InjectPanel(console, refresh_ms=50)
        network = NetworkPanel(console, refresh_ms=50)
        try:
            await until(lambda: inject.via_box.count() == 1, "the session in the Via box", 5)
            assert inject.via_box.currentText() == "target"
            assert inject.select_case("invalid-utf8-fragmented")
            assert inject.run()
            await until(lambda: inject.table.rowCount() == 1, "the probe's row", 20)
            assert inject.table.item(0, 6).text().startswith("close 1007")
            assert inject.table.item(0, 7).text() == "pass"
            assert "ws://127.0.0.1" in inject.table.item(0, 4).text()
            assert console.timeline.faults[-1].label == "inject invalid-utf8-fragmented → target"

            inject.s2c.setChecked(True)
            assert not inject.run_button.isEnabled()
            assert not inject.run()
            assert inject.message.text() == "no running node to inject from"

            assert not network.toggles["latency"].isEnabled()
            assert not network.toggle("latency", True)
            assert network.message.text() == "no cluster is running" and not network.active
        finally:
            for timer in (inject.timer, network.timer):
                timer.stop()
            await console.shutdown()

    run(qloop, body(), timeout=60)
