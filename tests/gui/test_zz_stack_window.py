"""File > Open stack… in the window: the user's own nodes in the Cluster panel (command, PID,
port, connections, rates, state), the console's connection through the balancer to them, a
kill seen on the Timeline and the plots, the node's output in its dock, the stack remembered,
and nothing left running after close. (test_zz_*: among the slowest, run last.)
"""

from __future__ import annotations

from pathlib import Path

from tests.support import pid_alive, until
from wsconsole.app.console import CONSOLE_CONN
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions
from wsconsole.gui.panels.cluster import COMMAND_COLUMN

from .conftest import run

STACK = Path(__file__).resolve().parents[2] / "examples" / "python-broadcast" / "stack.toml"


def test_open_a_stack_kill_its_node_and_close(qloop, settings_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> set[int]:
        app = ConsoleApp(GuiOptions(harness=False, swarm_clients=4,
                                    settings_path=settings_path))
        app.start()
        w, console = app.window, app.console
        try:
            w.open_stack(str(STACK))  # what File > Open stack… does with the chosen file
            assert w.recent_stacks()[0] == str(STACK)
            assert [a.text() for a in w.recent_menu.actions()] == [str(STACK)]
            panel = w.cluster
            await until(lambda: console.cluster_state == "ready", "the stack to start",
                        60, detail=lambda: [r.summary for r in console.errors.reports])
            await until(lambda: "ws://127.0.0.1:" in panel.state_label.text(),
                        "the stack's URL in the panel", 5)
            assert panel.state_label.text().startswith(f"stack {STACK}: ready")

            def cells(column: int) -> list[str]:
                return [panel.table.item(r, column).text() for r in range(panel.table.rowCount())
                        if panel.table.item(r, column) is not None]

            await until(lambda: cells(1) == ["running"] * 2, "two running nodes", 20,
                        detail=lambda: cells(1))
            assert not panel.table.isColumnHidden(COMMAND_COLUMN)
            assert cells(COMMAND_COLUMN) == ["python server.py"] * 2
            assert all(pid.isdigit() for pid in cells(2)) and all(p.isdigit() for p in cells(3))

            session = console.sessions[CONSOLE_CONN]
            await until(lambda: session.state is State.OPEN, "the console's connection", 20)
            # it joined the swarm's room as the recipe says: the app's chat reaches it
            await until(lambda: session.frames_in >= 5, "chat frames to the console", 20,
                        detail=lambda: (session.frames_out, session.frames_in))
            # traffic counted on the wire per node reaches the series and the table
            await until(lambda: any((console.series.last(f"msgs_out_per_s.{n}") or 0) > 0
                                    for n in ("n1", "n2")),
                        "messages per node in the series", 30)
            await until(lambda: w.plots.points("bytes_out_per_s.total") >= 2,
                        "the bytes plot", 20)
            # the app's own /metrics, scraped: the App metrics plot
            await until(lambda: w.plots.points("metric.broadcast_connections.n1") >= 2,
                        "the app's own series", 20)
            await until(lambda: sum(int(c) for c in cells(4)) >= 4, "connections per node", 20,
                        detail=lambda: cells(4))
            serving = await console.serving_node()
            assert serving in ("n1", "n2")

            # its output, time-stamped, in the Node output dock
            assert panel.select_node(serving)
            panel.show_output()
            w.node_output.refresh()
            await until(lambda: "listening on" in w.node_output.view.toPlainText(),
                        "the node's output", 10)
            first = w.node_output.view.toPlainText().splitlines()[0]
            assert first[2] == ":" and first[8] == "." and " harness | started pid" in first

            seen = len(console.timeline.states(CONSOLE_CONN))
            panel.run_action("kill")
            await until(lambda: serving in [m.label.split()[1] for m in console.timeline.faults
                                            if m.label.startswith("node ")],
                        "the kill on the Timeline", 15)

            def reconnected() -> bool:
                later = console.timeline.states(CONSOLE_CONN)[seen:]
                return State.RECONNECTING in later and later[-1] is State.OPEN

            await until(reconnected, "the console's connection back on the other node", 30)
            before = session.frames_in  # the join is sent again on the new connection
            await until(lambda: session.frames_in >= before + 5, "chat after the reconnect", 20)
            await until(lambda: w.fault_marks.count() >= 1, "the kill on the plots", 10)
            pids = console.started_pids()
            w.close()
            await app.shutdown()
            return pids
        except BaseException:
            await app.shutdown()
            raise

    pids = run(qloop, scenario(), 120)
    assert pids and not [pid for pid in pids if pid_alive(pid)]
