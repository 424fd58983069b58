"""The broker's shards in the Cluster panel, when the broker is a Valkey Cluster of ours.

One row per shard: its state (ok, degraded: no replica to make a publish durable, failing:
no primary, down, partitioned), its primary and replicas with their PIDs, its hash slots,
and the publishes/s and commands/s its primary served (from the merged stats sample, the
same figures the Plots panel draws as `publishes_per_s.<shard>`). The buttons act on the
selected shard: kill its primary (the replica takes over) or its replica, restart what was
killed, fail it over, cut it off from the nodes and heal it. Redrawn by the Cluster panel's
timer from `cluster.shards`; hidden when the broker is one server.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from wsconsole.app.console import Console
from wsconsole.app.ports import ClusterPort
from wsconsole.gui.tables import row_table, set_text

SHARD_COLUMNS = ("Shard", "State", "Primary", "Replicas", "Down", "Slots", "Pub/s", "Cmd/s")
STATE_COLORS = {"ok": "#27ae60", "degraded": "#e67e22", "failing": "#c0392b",
                "down": "#c0392b", "partitioned": "#8e44ad"}
ACTIONS = {
    "kill_primary": "Kill primary", "kill_replica": "Kill replica",
    "restart": "Restart killed", "failover": "Failover",
    "partition": "Partition", "heal": "Heal",
}  # fmt: skip


def _slots(ranges: list[list[int]]) -> str:
    return ", ".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ranges)


def _servers(names: list[str], pids: dict[str, int | None]) -> str:
    return ", ".join(f"{name} ({pids.get(name) or '-'})" for name in names) or "-"


class ShardsView(QWidget):
    """The shards table and the buttons that break the selected shard."""

    def __init__(self, console: Console, message: QLabel,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.message = message  # the Cluster panel's line for what went wrong
        self.shards: list[dict[str, Any]] = []
        self.title = QLabel("broker shards")
        self.table = row_table(SHARD_COLUMNS, visible_rows=4)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for action, label in ACTIONS.items():
            button = QPushButton(label)
            button.clicked.connect(lambda _=False, a=action: self.run(a))
            self.buttons[action] = button
            row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.table)
        layout.addLayout(row)

    def selected(self) -> dict[str, Any] | None:
        """The selected shard's fields."""
        row = self.table.currentRow()
        return self.shards[row] if 0 <= row < len(self.shards) else None

    def select(self, name: str) -> bool:
        """Select a shard's row by name (for keyboard users and tests)."""
        for row, shard in enumerate(self.shards):
            if shard["name"] == name:
                self.table.selectRow(row)
                return True
        return False

    def target(self, action: str, shard: dict[str, Any]) -> tuple[str, str] | None:
        """The supervisor operation and its target for a button on `shard`; None (and a
        message) when it has nothing to act on."""
        pids = shard.get("pids", {})
        if action == "kill_primary":
            server = shard["primary"]
            return ("kill", server) if server else None
        if action == "kill_replica":
            replicas = shard["replicas"]
            return ("kill", replicas[0]) if replicas else None
        if action == "restart":
            stopped = sorted(name for name, pid in pids.items() if pid is None)
            return ("restart", stopped[0]) if stopped else None
        return action, shard["name"]

    def run(self, action: str) -> None:
        """Run a button's operation on the selected shard, as a console task."""
        shard = self.selected()
        if shard is None:
            self.message.setText(f"select a shard to {ACTIONS[action].lower()}")
            return
        operation = self.target(action, shard)
        if operation is None:
            self.message.setText(f"{shard['name']}: nothing to {ACTIONS[action].lower()}")
            return
        self.message.setText("")
        self.console.spawn(self.console.shard_action(*operation),
                           f"shard {operation[0]} {operation[1]}")

    def refresh(self, cluster: ClusterPort | None, enabled: bool) -> None:
        """Redraw from the supervisor's shards and the latest sample; hidden without any."""
        shards = list(cluster.shards) if cluster is not None else []
        self.setVisible(bool(shards))
        if not shards or cluster is None:
            self.shards = []
            return
        selected = self.selected()
        self.shards = shards
        for button in self.buttons.values():
            button.setEnabled(enabled)
        figures = cluster.latest.shards
        if self.table.rowCount() != len(shards):
            self.table.setRowCount(len(shards))
        for r, shard in enumerate(shards):
            rates = figures.get(shard["name"])
            state = "partitioned" if shard.get("partitioned") else shard["state"]
            pids = shard.get("pids", {})
            values = (
                shard["name"], state,
                _servers([shard["primary"]] if shard["primary"] else [], pids),
                _servers(shard["replicas"], pids), _servers(shard.get("failed", []), pids),
                _slots(shard["slots"]),
                f"{rates.publishes_per_s:.0f}" if rates else "-",
                f"{rates.commands_per_s:.0f}" if rates else "-",
            )  # fmt: skip
            for c, value in enumerate(values):
                item = set_text(self.table, r, c, value)
                if c == 1:
                    item.setForeground(QColor(STATE_COLORS.get(state, "#444")))
                elif c >= 6:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight |
                                          Qt.AlignmentFlag.AlignVCenter)
        if selected is not None:
            self.select(selected["name"])
