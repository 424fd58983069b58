"""The default start-up with the real harness: 3 running nodes, plots moving, a Kill seen in
the table and the Timeline, and closing the window stops every process the console started.

(Named test_zz_* so it runs last in this directory: it is the slowest.)
"""

from __future__ import annotations

import asyncio

from tests.support import pid_alive
from wsconsole.app.console import CONSOLE_CONN
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions

from .conftest import run, until


def test_demo_cluster_kill_and_close(qloop, settings_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[set[int], list[State]]:
        app = ConsoleApp(GuiOptions(harness=True, swarm_clients=6, settings_path=settings_path))
        app.start()
        w = app.window
        console = app.console
        try:
            assert await app.wait_ready(90), [r.summary for r in console.errors.reports]
            cluster = console.cluster
            panel = w.cluster

            # the Cluster panel lists 3 running nodes
            def states() -> list[str]:
                return [panel.table.item(r, 1).text() for r in range(panel.table.rowCount())
                        if panel.table.item(r, 1) is not None]

            assert await until(lambda: states() == ["running"] * 3, 20), states()
            assert "broker up" in panel.broker_badge.text()

            # the console's own client is OPEN through the balancer, plots receive data
            session = console.sessions[CONSOLE_CONN]
            assert await until(lambda: session.state is State.OPEN, 20)
            assert await until(lambda: (console.series.last("conns.total") or 0) >= 1, 20)
            assert await until(lambda: w.plots.points("conns.total") >= 3, 20)
            assert await until(lambda: w.plots.points("rtt.console") >= 1, 20)
            if console.swarm is not None:  # the swarm publishes: messages flow
                assert await until(lambda: (console.series.last("msgs.in") or 0) > 0, 20)
                assert await until(lambda: w.plots.points("lat.p99") >= 1, 20)
                assert await until(lambda: "6/6 connected" in panel.swarm_label.text(), 20)

            # Kill the node that serves the console's client, from the panel
            serving = None
            for _ in range(60):
                serving = await console.serving_node()
                if serving is not None:
                    break
                await asyncio.sleep(0.25)
            assert serving is not None and serving in cluster.nodes
            seen_before = len(console.timeline.states(CONSOLE_CONN))
            assert panel.select_node(serving)
            panel.run_action("kill")

            def row_state(node_id: str) -> str | None:
                for r in range(panel.table.rowCount()):
                    if panel.table.item(r, 0).text() == node_id:
                        return panel.table.item(r, 1).text()
                return None

            assert await until(lambda: row_state(serving) == "killed", 15)

            def after_kill() -> list[State]:
                return console.timeline.states(CONSOLE_CONN)[seen_before:]

            def reconnected() -> bool:
                later = after_kill()
                return State.RECONNECTING in later and later[-1] is State.OPEN

            assert await until(reconnected, 30), after_kill()
            assert any(m.label.startswith(f"node {serving}") for m in console.timeline.faults)

            # Pause (SIGSTOP) the node serving it now: a heartbeat miss, then a reconnect
            paused = None
            for _ in range(60):  # the reconnect may still be settling on a node
                paused = await console.serving_node()
                if paused is not None and session.state is State.OPEN:
                    break
                await asyncio.sleep(0.25)
            assert paused is not None and paused != serving, (paused, after_kill())
            lane = console.timeline.lanes[CONSOLE_CONN]
            misses_before = sum(1 for m in lane.markers if m.kind == "miss")
            assert panel.select_node(paused)
            panel.run_action("pause")
            assert await until(lambda: row_state(paused) == "paused", 10)
            assert await until(lambda: sum(1 for m in lane.markers if m.kind == "miss")
                               > misses_before, 20)
            assert await until(lambda: session.state is State.OPEN, 20)
            panel.run_action("resume")
            assert await until(lambda: row_state(paused) == "running", 10)

            # a network fault typed in the panel: refused when malformed, felt when applied
            panel.net_edit.setText("latency lots")
            assert not panel.apply_net_fault()
            assert "not a number" in panel.message.text()
            panel.net_target.setCurrentText("all")
            panel.net_edit.setText("latency 300ms")
            assert panel.apply_net_fault()
            assert await until(lambda: (session.rtt or 0) > 0.25, 20), session.rtt
            assert any(m.label.startswith("net latency 300ms") for m in console.timeline.faults)
            panel.clear_net_faults()
            assert await until(lambda: (session.rtt or 1) < 0.2, 20), session.rtt

            # closing the window stops every process the console started
            pids = console.started_pids()
            assert len(pids) >= 5  # broker, 3 nodes (one dead already), balancer, swarm
            w.close()
            assert app.closed.is_set()
            await app.shutdown()
            return pids, after_kill()
        except BaseException:
            await app.shutdown()
            raise

    pids, transitions = run(qloop, scenario(), 110)
    alive = [pid for pid in pids if pid_alive(pid)]
    assert not alive, f"still running after close: {alive}"
    print(f"\nkill -> timeline {[s.value for s in transitions]}; stopped {len(pids)} pids")


def test_close_during_startup_leaves_no_process(qloop, settings_path) -> None:  # type: ignore[no-untyped-def]
    """Closing while the demo cluster is still starting stops whatever was already started."""

    async def scenario() -> set[int]:
        app = ConsoleApp(GuiOptions(harness=True, swarm_clients=0, settings_path=settings_path))
        app.start()
        seen: set[int] = set()
        try:
            # wait until some children exist, but not for the cluster to be ready
            assert await until(lambda: app.console.cluster is not None
                               and len(app.console.started_pids()) >= 1, 30)
            seen |= app.console.started_pids()
            app.window.close()
            assert app.closed.is_set()
        finally:
            await app.shutdown()
        return seen | app.console.started_pids()

    pids = run(qloop, scenario(), 60)
    assert pids
    alive = [pid for pid in pids if pid_alive(pid)]
    assert not alive, f"still running after close: {alive}"
