"""The default start-up with the real harness: 3 running nodes, plots moving, a Kill seen in
the table and the Timeline, and closing the window stops every process the console started.

(Named test_zz_* so it runs last in this directory: it is the slowest.)
"""

from __future__ import annotations

import time

from tests.support import SCALE, pid_alive, until
from wsconsole.app.console import CONSOLE_CONN
from wsconsole.app.framestore import FrameFilter
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions

from .conftest import run


def test_demo_cluster_kill_and_close(qloop, settings_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[set[int], list[State]]:
        app = ConsoleApp(GuiOptions(harness=True, swarm_clients=6, settings_path=settings_path))
        app.start()
        w = app.window
        console = app.console
        try:
            assert await app.wait_ready(90 * SCALE), [r.summary for r in console.errors.reports]
            cluster = console.cluster
            panel = w.cluster

            # the Cluster panel lists 3 running nodes
            def states() -> list[str]:
                return [panel.table.item(r, 1).text() for r in range(panel.table.rowCount())
                        if panel.table.item(r, 1) is not None]

            await until(lambda: states() == ["running"] * 3,
                        "three running nodes in the Cluster panel", 20, detail=states)
            assert "broker up" in panel.broker_badge.text()

            # the console's own client is OPEN through the balancer, plots receive data
            session = console.sessions[CONSOLE_CONN]
            await until(lambda: session.state is State.OPEN, "the console's session to open", 20)
            await until(lambda: (console.series.last("connections.total") or 0) >= 1,
                        "a connection in the series", 20)
            await until(lambda: w.plots.points("connections.total") >= 3,
                        "three points on the connections plot", 20)
            await until(lambda: w.plots.points("rtt.console") >= 1,
                        "a point on the round-trip plot", 20)
            if console.swarm is not None:  # the swarm publishes: messages flow
                await until(lambda: (console.series.last("msgs_in_per_s.total") or 0) > 0,
                            "swarm messages in the series", 20)
                await until(lambda: w.plots.points("lat.p99") >= 1,
                            "a point on the p99 latency plot", 20)
                await until(lambda: "6/6 connected" in panel.swarm_label.text(),
                            "the whole swarm connected", 20)

            # Kill the node that serves the console's client, from the panel
            serving: str | None = None

            async def found_serving() -> bool:
                nonlocal serving
                serving = await console.serving_node()
                return serving is not None

            await until(found_serving, "the node serving the console's client", 15,
                        interval=0.25)
            assert serving is not None and serving in cluster.nodes
            seen_before = len(console.timeline.states(CONSOLE_CONN))
            assert panel.select_node(serving)
            panel.run_action("kill")

            def row_state(node_id: str) -> str | None:
                for r in range(panel.table.rowCount()):
                    if panel.table.item(r, 0).text() == node_id:
                        return panel.table.item(r, 1).text()
                return None

            await until(lambda: row_state(serving) == "killed", "the killed node's row", 15)

            def after_kill() -> list[State]:
                return console.timeline.states(CONSOLE_CONN)[seen_before:]

            def reconnected() -> bool:
                later = after_kill()
                return State.RECONNECTING in later and later[-1] is State.OPEN

            await until(reconnected, "a reconnect after the kill", 30, detail=after_kill)
            assert any(m.label.startswith(f"node {serving}") for m in console.timeline.faults)

            # the swarm's clients have lanes of their own; the kill's side panel lists who
            # it hit (the console at least) with the time each took to come back
            swarm_lanes = console.timeline.in_group("source", "swarm")
            assert len(swarm_lanes) == 6 and all(lane.spans for lane in swarm_lanes)
            kill_mark = next(m for m in console.timeline.faults
                             if m.label.startswith(f"node {serving}"))
            side = w.timeline.show_fault(kill_mark)
            assert CONSOLE_CONN in [hit.lane for hit in side.impact.hits]
            assert w.frames.scope is not None and CONSOLE_CONN in w.frames.scope[0]
            w.frames.clear_scope()
            # a swarm client's frames come from the swarm when asked for
            fetched = await console.fetch_swarm_frames([swarm_lanes[0].name], 0, time.time())
            assert fetched > 0
            held = console.frames.match(FrameFilter.make(conns=[swarm_lanes[0].name]))
            assert len(held) == fetched
            assert await console.fetch_swarm_frames([swarm_lanes[0].name], 0, 0) == 0

            # the heartbeat lab's swarm row on half the swarm: the nodes drop the silent
            # clients, and the panel says so in figures
            lab = w.heartbeat
            lab.swarm_share.setValue(50)
            lab.swarm_mode.setCurrentIndex(lab.swarm_mode.findData("off"))
            assert lab.apply_swarm()
            await until(lambda: lab.message.text().startswith("swarm: 3 client(s): pongs "
                                                              "withheld"),
                        "the swarm's answer in the lab", 10, detail=lab.message.text)

            def reaction() -> str:
                lab.refresh()
                return lab.swarm_label.text()

            await until(lambda: "the server dropped silent clients" in reaction(),
                        "a silent swarm client dropped by its node, in the lab", 20,
                        detail=reaction)
            assert reaction().startswith("3 client(s) silent now")
            # the drop's marker comes in the next fleet batch (a quarter second apart from
            # the stats line that counted it)
            await until(lambda: any(m.kind == "dropped" for lane in console.timeline.in_group(
                "source", "swarm") for m in lane.markers), "the drop on a swarm lane", 5)
            assert await console.swarm.set_pongs(0.0, PongPolicy("off")) == 0

            # Pause (SIGSTOP) the node serving it now: a heartbeat miss, then a reconnect
            paused: str | None = None

            async def settled() -> bool:  # the reconnect may still be settling on a node
                nonlocal paused
                paused = await console.serving_node()
                return paused is not None and session.state is State.OPEN

            await until(settled, "the reconnected client's node", 15, interval=0.25,
                        detail=after_kill)
            assert paused is not None and paused != serving, (paused, after_kill())
            lane = console.timeline.lanes[CONSOLE_CONN]
            misses_before = sum(1 for m in lane.markers if m.kind == "miss")
            assert panel.select_node(paused)
            panel.run_action("pause")
            await until(lambda: row_state(paused) == "paused", "the paused node's row", 10)
            await until(lambda: sum(1 for m in lane.markers if m.kind == "miss") > misses_before,
                        "a heartbeat miss on the timeline", 20)
            await until(lambda: session.state is State.OPEN, "the session to open again", 20)
            panel.run_action("resume")
            await until(lambda: row_state(paused) == "running", "the resumed node's row", 10)

            # a network fault typed in the panel: refused when malformed, felt when applied
            panel.net_edit.setText("latency lots")
            assert not panel.apply_net_fault()
            assert "not a number" in panel.message.text()
            panel.net_target.setCurrentText("all")
            panel.net_edit.setText("latency 300ms")
            assert panel.apply_net_fault()
            await until(lambda: (session.rtt or 0) > 0.25,
                        "the added latency in the round-trip time", 20, detail=lambda: session.rtt)
            # the mark follows the balancer's control reply, which may trail the slower pings
            await until(lambda: any(m.label.startswith("net latency 300ms")
                                    for m in console.timeline.faults),
                        "the network fault's mark on the timeline", 10,
                        detail=lambda: [m.label for m in console.timeline.faults])
            panel.clear_net_faults()
            await until(lambda: (session.rtt or 1) < 0.2,
                        "the round-trip time back to normal", 20, detail=lambda: session.rtt)

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
            await until(lambda: app.console.cluster is not None
                        and len(app.console.started_pids()) >= 1, "the first started child", 30)
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
