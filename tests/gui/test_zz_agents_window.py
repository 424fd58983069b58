"""The agents in the Cluster panel (`wsconsole gui --agents-broker URL --agents-secret-env VAR`):
two real agents against the bundled Valkey, their processes grouped under each host, the
buttons pausing and killing the selected process, and an agent marked lost when it dies.

(Named test_zz_* so it runs with the other slow window tests, last in this directory.)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.agentkit import SECRET, node_args, recorded_pids, start_agent, stop_agent
from tests.support import ProcessRegistry, pid_alive, until
from wsconsole.gui.app import ConsoleApp, GuiOptions
from wsconsole.harness.broker import Broker

from .conftest import run


def test_agents_by_host_in_the_cluster_panel(  # type: ignore[no-untyped-def]
    qloop, settings_path, procs: ProcessRegistry, tmp_path: Path
) -> None:
    broker = Broker(persist=False)
    broker.start()
    dirs = {name: tmp_path / name for name in ("hostA", "hostB")}
    agents = {name: start_agent(procs, broker.url, name, path, "--advertise", "127.0.0.1")
              for name, path in dirs.items()}

    async def scenario() -> None:
        app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path,
                                    agents_broker=broker.url, agents_secret=SECRET))
        app.start()
        w = app.window
        view, client = w.cluster.agents, app.agents
        assert client is not None and view.isVisible()
        try:
            await client.wait_for_agent("hostA", 20)
            await client.wait_for_agent("hostB", 20)
            await client.start("hostA", "n1", "node", node_args(broker.url))
            await client.start("hostA", "n2", "node", node_args(broker.url))
            await client.start("hostB", "n1", "node", node_args(broker.url))

            def row(*key: str) -> list[str]:
                item = view._items.get(key)
                return [item.text(c) for c in range(8)] if item is not None else []

            def tree() -> list[tuple[str, list[str]]]:
                top = [view.tree.topLevelItem(i) for i in range(view.tree.topLevelItemCount())]
                return [(item.text(0), [item.child(j).text(0) for j in range(item.childCount())])
                        for item in top]

            await until(lambda: tree() == [("hostA  127.0.0.1", ["n1", "n2"]),
                                           ("hostB  127.0.0.1", ["n1"])],
                        "both hosts and their processes in the tree", 20, detail=tree)
            await until(lambda: row("hostA", "n2")[7].endswith("MiB"), "RSS of a process",
                        10, detail=lambda: row("hostA", "n2"))
            assert row("hostA")[1:3] == ["up", "2 running"]
            assert row("hostB", "n1")[1:3] == ["running", "node"]

            view.run("pause")
            assert "select a process" in w.cluster.message.text()
            assert view.select("hostA", "n2")
            view.buttons["pause"].click()
            await until(lambda: row("hostA", "n2")[1] == "paused", "n2 paused", 10,
                        detail=lambda: row("hostA", "n2"))
            await until(lambda: any(m.label == "agent hostA: pause n2"
                                    for m in app.console.timeline.faults),
                        "the pause marked on the Timeline", 5)
            assert view.select("hostB", "n1")
            view.buttons["kill"].click()
            await until(lambda: row("hostB", "n1")[1] == "exited (signal SIGKILL)",
                        "hostB's n1 killed", 10, detail=lambda: row("hostB", "n1"))
            shot = tmp_path / "agents.png"
            assert w.cluster.grab().save(str(shot)) and shot.stat().st_size > 0
            if os.environ.get("WSCONSOLE_SHOT_DIR"):  # the docs' picture, taken on request
                view.resize(820, view.height())  # wider than the dock: every column shows
                view.grab().save(str(Path(os.environ["WSCONSOLE_SHOT_DIR"])
                                     / "agents-by-host.png"))

            agents["hostB"].send_signal(signal.SIGKILL)
            await until(lambda: row("hostB")[1] == "lost", "hostB lost", 10,
                        detail=lambda: row("hostB"))
            view.select("hostA", "n1")
            view.buttons["restart"].click()
            await until(lambda: row("hostA", "n1")[5] == "1", "hostA's n1 restarted", 15,
                        detail=lambda: row("hostA", "n1"))
        finally:
            await app.shutdown()

    try:
        run(qloop, scenario(), 90)
    finally:
        for name, agent in agents.items():
            stop_agent(agent, dirs[name])
        broker.stop()
    for name in dirs:
        assert not [pid for pid in recorded_pids(dirs[name]) if pid_alive(pid)]
