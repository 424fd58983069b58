"""Cluster panel: the supervisor's nodes, broker and balancer, with the controls to break them.

Reads `Console.cluster` (the harness supervisor) on a 2 Hz timer; every button runs a
supervisor command as a console task, so a failure is reported in the window, never lost.
The TLS box restarts the demo cluster serving wss:// (or ws:// again), with the console's
own client and the swarm, which trust the local CA by themselves.
A stack's nodes (the user's own) show their command line too; their connections and rates
are the balancer's count of their traffic, and Output shows what the selected node printed.
Below: a cluster broker's shards (shards.py) and the agents on other hosts (agents.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.gui.panels.agents import AgentsView
from wsconsole.gui.panels.shards import ShardsView
from wsconsole.gui.tables import row_table, set_text
from wsconsole.gui.theme import NODE_COLORS, badge_style
from wsconsole.harness.stats import NodeFigures

NODE_COLUMNS = ("Node", "State", "PID", "Port", "Conns", "In/s", "Out/s", "Errors", "Command")
COMMAND_COLUMN = NODE_COLUMNS.index("Command")
NODE_ACTIONS = ("kill", "pause", "resume", "drain", "restart")


class ClusterPanel(QWidget):
    """Nodes table and Kill/Pause/Resume/Drain/Restart/Add; broker and balancer rows."""

    output_requested = Signal(str)  # a node id: show what it printed

    def __init__(self, console: Console, parent: QWidget | None = None,
                 refresh_ms: int = 500) -> None:
        super().__init__(parent)
        self.console = console
        self.state_label = QLabel("no cluster")
        self.tls_box = QCheckBox("TLS (wss://)")
        self.tls_box.setToolTip("restart the demo cluster serving wss:// with certificates "
                                "of wsconsole's local CA (the console's clients trust it)")
        self.tls_box.toggled.connect(self.switch_tls)
        self.tls_label = QLabel("")
        self.tls_label.setWordWrap(True)
        self.tls_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # figures as wide as they need, the rest to the last column: a stack's command line
        self.table = row_table(NODE_COLUMNS, visible_rows=5)
        self.table.setColumnHidden(COMMAND_COLUMN, True)

        self.buttons: dict[str, QPushButton] = {}
        node_row = QHBoxLayout()
        for action in (*NODE_ACTIONS, "add"):
            button = QPushButton(action.capitalize())
            button.clicked.connect(lambda _=False, a=action: self.run_action(a))
            self.buttons[action] = button
            node_row.addWidget(button)
        self.buttons["output"] = QPushButton("Node output")
        self.buttons["output"].setToolTip("what the selected node printed, time-stamped")
        self.buttons["output"].clicked.connect(self.show_output)

        self.broker_badge = QLabel("broker -")
        self.broker_detail = QLabel("", wordWrap=True)  # a long URL must not widen the panel
        self.buttons["broker_kill"] = QPushButton("Kill broker")
        self.buttons["broker_restart"] = QPushButton("Restart broker")
        broker_row = QHBoxLayout()
        broker_row.addWidget(self.broker_badge)
        broker_row.addWidget(self.broker_detail, 1)
        for action in ("broker_kill", "broker_restart"):
            self.buttons[action].clicked.connect(lambda _=False, a=action: self.run_action(a))
            broker_row.addWidget(self.buttons[action])

        self.net_target = QComboBox()
        self.net_edit = QLineEdit(placeholderText="latency 200ms 50ms | bandwidth 100kB/s | "
                                                  "reset | blackhole | slice 16 5ms | half_open up")
        self.buttons["net_apply"] = QPushButton("Apply")
        self.buttons["net_clear"] = QPushButton("Clear")
        self.sticky_box = QComboBox()
        self.sticky_box.addItems(["ip", "cookie", "sid"])
        self.buttons["sticky"] = QPushButton("Set")
        net_row = QHBoxLayout()
        net_row.addWidget(QLabel("network"))
        net_row.addWidget(self.net_target)
        net_row.addWidget(self.net_edit, 1)
        net_row.addWidget(self.buttons["net_apply"])
        net_row.addWidget(self.buttons["net_clear"])
        sticky_row = QHBoxLayout()
        sticky_row.addWidget(QLabel("sticky"))
        sticky_row.addWidget(self.sticky_box)
        sticky_row.addWidget(self.buttons["sticky"])
        sticky_row.addStretch(1)
        sticky_row.addWidget(self.buttons["output"])
        self.buttons["net_apply"].clicked.connect(self.apply_net_fault)
        self.net_edit.returnPressed.connect(self.apply_net_fault)
        self.buttons["net_clear"].clicked.connect(self.clear_net_faults)
        self.buttons["sticky"].clicked.connect(self.set_sticky)
        self.balancer_label = QLabel("balancer -")
        self.balancer_label.setWordWrap(True)
        self.swarm_label = QLabel("")
        self.swarm_label.setWordWrap(True)
        self.message = QLabel("")
        self.message.setStyleSheet("color: #c0392b;")
        self.shards = ShardsView(console, self.message)  # a cluster broker's shards
        self.agents = AgentsView(console, self.message)  # other hosts' agents, if given

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        state_row = QHBoxLayout()
        state_row.addWidget(self.state_label, 1)
        state_row.addWidget(self.tls_box)
        layout.addLayout(state_row)
        layout.addWidget(self.tls_label)
        layout.addWidget(self.table, 1)
        layout.addLayout(node_row)
        layout.addLayout(broker_row)
        layout.addWidget(self.shards, 1)
        layout.addWidget(self.agents, 1)
        layout.addWidget(self.balancer_label)
        layout.addLayout(net_row)
        layout.addLayout(sticky_row)
        layout.addWidget(self.swarm_label)
        layout.addWidget(self.message)

        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    def selected_node(self) -> str | None:
        """Id of the selected node row."""
        row = self.table.currentRow()
        item = self.table.item(row, 0) if row >= 0 else None
        return None if item is None else item.text()

    def select_node(self, node_id: str) -> bool:
        """Select the row of `node_id` (for keyboard users and tests)."""
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.text() == node_id:
                self.table.selectRow(row)
                return True
        return False

    def run_action(self, action: str) -> None:
        """Run a supervisor command on the selected node (or the cluster/broker)."""
        node = self.selected_node() if action in NODE_ACTIONS else None
        if action in NODE_ACTIONS and node is None:
            self.message.setText(f"select a node to {action}")
            return
        if self.console.cluster is None:
            self.message.setText("no cluster is running (start without --url / --no-harness)")
            return
        self.message.setText("")
        label = f"{action} {node}" if node else action
        self.console.spawn(self.console.cluster_action(action, node), label)

    def switch_tls(self, on: bool) -> None:
        """Restart the demo cluster serving wss:// (`on`) or ws://."""
        cluster = self.console.cluster
        if cluster is not None and cluster.config.tls == on:
            return  # the box follows the running cluster (refresh)
        self.message.setText("")
        self.tls_box.setEnabled(False)
        self.console.spawn(self.console.restart_demo(on),
                           f"restart the cluster with {'wss' if on else 'ws'}://")
    def show_output(self) -> None:
        """Ask for the selected node's output (the Node output dock)."""
        node = self.selected_node()
        if node is None:
            self.message.setText("select a node to see its output")
            return
        self.output_requested.emit(node)

    def apply_net_fault(self) -> bool:
        """Apply the typed network fault to the chosen target; bad text is refused here."""
        from wsconsole.harness.netfaults import FaultError, fault_from_words

        text = self.net_edit.text().strip()
        try:
            fault_from_words(text.split())
        except FaultError as exc:
            self.message.setText(f"network fault: {exc}")
            return False
        if self.console.cluster is None:
            self.message.setText("no cluster is running")
            return False
        target = self.net_target.currentText() or "all"
        self.message.setText("")
        self.console.spawn(self.console.net_fault(target, text), f"net {text} on {target}")
        return True

    def clear_net_faults(self) -> None:
        """Remove the network faults of the chosen target."""
        if self.console.cluster is None:
            self.message.setText("no cluster is running")
            return
        target = self.net_target.currentText() or "all"
        self.console.spawn(self.console.net_clear(target), f"net clear on {target}")

    def set_sticky(self) -> None:
        """Switch the balancer's sticky mode."""
        if self.console.cluster is None:
            self.message.setText("no cluster is running")
            return
        mode = self.sticky_box.currentText()
        self.console.spawn(self.console.set_sticky(mode), f"sticky {mode}")

    def _refresh_tls(self) -> None:
        """The TLS box follows the cluster; the CA to trust is named under it."""
        cluster = self.console.cluster
        settled = self.console.cluster_state not in ("starting", "stopping")
        # the box restarts the demo cluster: not while the user's stack runs
        self.tls_box.setEnabled(settled and self.console.stack_path is None)
        tls = cluster is not None and cluster.config.tls
        if settled and self.tls_box.isChecked() != tls:
            self.tls_box.blockSignals(True)
            self.tls_box.setChecked(tls)
            self.tls_box.blockSignals(False)
        ca_file = cluster.ca_file if cluster is not None and tls else None
        shown = str(ca_file).replace(str(Path.home()), "~", 1) if ca_file else ""
        # the path on a line of its own: a long path must not widen the panel
        self.tls_label.setText("TLS: certificates of the local CA (trusted by the console; "
                               f"for a browser see docs/harness.md):\n{shown}" if ca_file else "")
        self.tls_label.setToolTip(str(ca_file) if ca_file else "")
        self.tls_label.setVisible(ca_file is not None)

    def rows(self) -> list[dict[str, Any]]:
        """The nodes as shown: id, state, pid, port and the latest stats."""
        cluster = self.console.cluster
        if cluster is None:
            return []
        figures = cluster.latest.nodes
        out = []
        for node_id, info in list(cluster.nodes.items()):
            node = figures.get(node_id, NodeFigures())
            out.append({
                "id": node_id,
                "state": str(getattr(info.state, "value", info.state)),
                "pid": info.pid,
                "port": info.port,
                "connections": node.connections if node.up else 0,
                "in": node.msgs_in_per_s,
                "out": node.msgs_out_per_s,
                "errors": node.errors,
                "command": getattr(info, "command", None) or "",
            })
        return out

    def refresh(self) -> None:
        """Timer tick: redraw the table and the broker/balancer rows."""
        cluster = self.console.cluster
        ready = cluster is not None and self.console.cluster_state == "ready"
        stack = self.console.stack_path
        what = f"stack {stack}" if stack else "cluster"
        self.state_label.setText(f"{what}: {self.console.cluster_state}"
                                 + (f"  {cluster.app_url}" if ready else ""))
        enabled = cluster is not None and self.console.cluster_state == "ready"
        for button in self.buttons.values():
            button.setEnabled(enabled)
        self._refresh_tls()
        rows = self.rows()
        self.table.setColumnHidden(COMMAND_COLUMN, not any(row["command"] for row in rows))
        targets = ["all", *(row["id"] for row in rows)]
        if [self.net_target.itemText(i) for i in range(self.net_target.count())] != targets:
            current = self.net_target.currentText()
            self.net_target.clear()
            self.net_target.addItems(targets)
            if current in targets:
                self.net_target.setCurrentText(current)
        selected = self.selected_node()
        if self.table.rowCount() != len(rows):
            self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = (row["id"], row["state"], row["pid"] or "-", row["port"] or "-",
                      row["connections"], f"{row['in']:.0f}", f"{row['out']:.0f}",
                      row["errors"], row["command"])
            for c, value in enumerate(values):
                item = set_text(self.table, r, c, str(value))
                if c == 1:
                    item.setForeground(QColor(NODE_COLORS.get(row["state"], "#444")))
                elif c == COMMAND_COLUMN and item.toolTip() != str(value):
                    item.setToolTip(str(value))  # the whole command line, however narrow
                elif 1 < c < COMMAND_COLUMN:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight |
                                          Qt.AlignmentFlag.AlignVCenter)
        if selected is not None and self.selected_node() != selected:
            self.select_node(selected)
        self.shards.refresh(cluster, enabled)
        self.agents.refresh()
        swarm = self.console.swarm_summary()
        self.swarm_label.setText(swarm or "")
        self.swarm_label.setVisible(swarm is not None)
        if cluster is None:
            self.broker_badge.setText("broker -")
            self.broker_badge.setStyleSheet("")
            self.broker_detail.setText("")
            self.balancer_label.setText("balancer -")
            return
        broker = cluster.broker
        state = str(broker.state)
        self.broker_badge.setText(f"broker {state}")
        self.broker_badge.setStyleSheet(badge_style({"up": "running", "none": ""}.get(
            state, "killed")))
        kind = "external" if broker.external else f"pid {broker.pid}"
        shards = cluster.shards
        if shards:  # our own Valkey Cluster: its seeds are a long list, its PIDs per shard
            servers = sum(1 for shard in shards for pid in shard.get("pids", {}).values() if pid)
            kind = f"Valkey Cluster: {len(shards)} shards, {servers} servers running"
        self.broker_detail.setText(kind if shards else f"{broker.url or ''}  ({kind})"
                                   if state != "none" else "this stack shares no broker")
        self.broker_detail.setToolTip(broker.url or "")
        for action in ("broker_kill", "broker_restart"):  # a cluster breaks shard by shard
            self.buttons[action].setVisible(not shards)
        balancer = cluster.balancer
        backends = cluster.latest.balancer.backends
        counts = ", ".join(f"{bid}: {b.connections}" for bid, b in sorted(backends.items()))
        self.balancer_label.setText(
            f"balancer {balancer.state} on :{balancer.port}  sticky={balancer.sticky}  "
            f"backends: {counts or '-'}"
        )
