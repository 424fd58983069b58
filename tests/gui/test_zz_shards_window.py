"""The demo on a broker cluster (`wsconsole gui --broker-cluster 3`): the Cluster panel lists
the shards with their servers, slots and publish rates, its buttons kill a shard's primary
(the replica takes over, the row says so) and start it again, the plots get a publishes/s
series per shard, and closing stops every server of the cluster.

(Named test_zz_* so it runs with the other slow window tests, last in this directory.)
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support import SCALE, pid_alive, until
from wsconsole.gui.app import ConsoleApp, GuiOptions

from .conftest import run


def test_shards_in_the_cluster_panel_kill_a_primary_and_close(  # type: ignore[no-untyped-def]
    qloop, settings_path, tmp_path: Path
) -> None:
    async def scenario() -> set[int]:
        app = ConsoleApp(GuiOptions(harness=True, swarm_clients=4, broker_cluster=3,
                                    settings_path=settings_path))
        app.start()
        w, console = app.window, app.console
        try:
            assert await app.wait_ready(90 * SCALE), [r.summary for r in console.errors.reports]
            view = w.cluster.shards
            assert view.isVisible()

            def cell(name: str, column: int) -> str:
                for row in range(view.table.rowCount()):
                    if view.table.item(row, 0).text() == name:
                        return view.table.item(row, column).text()
                return ""

            await until(lambda: [cell(s, 1) for s in ("s1", "s2", "s3")] == ["ok"] * 3,
                        "three shards ok in the panel", 20)
            assert cell("s1", 2).startswith("s1a (") and cell("s3", 5) == "10922-16383"
            assert "Valkey Cluster: 3 shards, 6 servers" in w.cluster.broker_detail.text()
            # the swarm publishes: each shard's rate reaches the panel and the series
            await until(lambda: any(cell(s, 6) not in ("", "-", "0") for s in ("s1", "s2")),
                        "a publish rate on a shard", 30,
                        detail=lambda: [cell(s, 6) for s in ("s1", "s2")])
            assert console.series.last("publishes_per_s.s1") is not None
            # ... and the Plots panel draws each shard's rate in its own plot
            w.plots.refresh()
            assert "Shard publishes / s" in w.plots.titles
            await until(lambda: (w.plots.refresh(), w.plots.points("publishes_per_s.s1"))[1] > 0,
                        "s1's publish rate plotted", 10)
            if os.environ.get("WSCONSOLE_SHOT_DIR"):
                w.plots.grab().save(str(Path(os.environ["WSCONSOLE_SHOT_DIR"])
                                        / "plots-shards.png"))

            view.run("kill_primary")
            assert "select a shard" in w.cluster.message.text()
            assert view.select("s1")
            view.run("kill_primary")
            await until(lambda: cell("s1", 2).startswith("s1b (") and "s1a" in cell("s1", 4),
                        "s1b promoted, s1a down", 20,
                        detail=lambda: [cell("s1", c) for c in range(5)])
            assert any(m.label == "shard kill s1a" for m in console.timeline.faults)
            shot = tmp_path / "shards.png"
            assert w.grab().save(str(shot)) and shot.stat().st_size > 0
            if os.environ.get("WSCONSOLE_SHOT_DIR"):  # the docs' picture, taken on request
                w.cluster.grab().save(str(Path(os.environ["WSCONSOLE_SHOT_DIR"])
                                          / "cluster-shards.png"))
            view.run("restart")
            await until(lambda: cell("s1", 3).startswith("s1a (") and cell("s1", 1) == "ok",
                        "s1a back as the replica of s1", 20,
                        detail=lambda: [cell("s1", c) for c in range(5)])

            pids = console.started_pids()
            servers = [pid for shard in console.cluster.shards
                       for pid in shard["pids"].values() if pid]
            assert len(servers) == 6 and set(servers) <= pids
            w.close()
            assert app.closed.is_set()
            await app.shutdown()
            return pids
        except BaseException:
            await app.shutdown()
            raise

    pids = run(qloop, scenario(), 120)
    alive = [pid for pid in pids if pid_alive(pid)]
    assert not alive, f"still running after close: {alive}"
