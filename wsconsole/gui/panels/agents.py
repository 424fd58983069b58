"""The agents in the Cluster panel: every host's agent and its processes, as a tree.

One top-level row per agent (its name is its host's: `wsconsole agent --name HOST`), with
its address, state (up, lost after ~3 s without a report, stopped after its bye), how long
ago it reported, and its processes' totals; under it one row per process: role, PID, state
(running, paused, exited with its code or signal), since when, restarts, CPU and RSS. The
buttons act on the selected process through the AgentsClient (harness/agents.py) as console
tasks, each marked on the Timeline once done; a refusal or a failure is shown on the
panel's message line.

Nothing here waits on the broker: the Cluster panel's timer calls `refresh`, which reads the
client's table (`AgentsClient.agents()`, kept current by its own reader task).
Hidden until the window is given agents (`wsconsole gui --agents-broker URL`).
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.harness.agents import PROC_COLUMNS, AgentError, AgentsClient

COLUMNS = ("Host / process", *PROC_COLUMNS[1:4], "Seen / since", *PROC_COLUMNS[5:])
ACTIONS = ("kill", "pause", "resume", "restart")
STATE_COLORS = {"up": "#27ae60", "running": "#27ae60", "paused": "#e67e22", "lost": "#c0392b",
                "exited": "#7f8c8d", "stopped": "#7f8c8d"}
NUMERIC = (3, 5, 6, 7)


class AgentsView(QWidget):
    """The agents' tree and the buttons for the selected process."""

    def __init__(self, console: Console, message: QLabel,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.message = message  # the Cluster panel's line for what went wrong
        self.client: AgentsClient | None = None
        self.title = QLabel("agents")
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setUniformRowHeights(True)
        self.tree.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.tree.setMinimumHeight(8 * (self.tree.fontMetrics().height() + 6))
        self._items: dict[tuple[str, ...], QTreeWidgetItem] = {}  # (agent,) or (agent, proc)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for action in ACTIONS:
            button = QPushButton(action.capitalize())
            button.setToolTip(f"{action} the selected process on its agent's host")
            button.clicked.connect(lambda _=False, a=action: self.run(a))
            self.buttons[action] = button
            row.addWidget(button)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.tree, 1)
        layout.addLayout(row)
        self.setVisible(False)

    def attach(self, client: AgentsClient) -> None:
        """Show the agents `client` follows (the window's --agents-broker)."""
        self.client = client
        self.title.setText(f"agents on {client.broker_url}")
        self.setVisible(True)
        self.refresh()

    def selected(self) -> tuple[str, str] | None:
        """(agent, process) of the selected process row; None for none or an agent row."""
        items = self.tree.selectedItems()
        key = items[0].data(0, Qt.ItemDataRole.UserRole) if items else None
        return (key[0], key[1]) if key and len(key) == 2 else None

    def select(self, agent: str, proc: str) -> bool:
        """Select a process row (for keyboard users and tests)."""
        item = self._items.get((agent, proc))
        if item is not None:
            self.tree.setCurrentItem(item)
        return item is not None

    def run(self, action: str) -> None:
        """A button: `action` on the selected process, as a console task."""
        target = self.selected()
        if self.client is None or target is None:
            self.message.setText(f"select a process under an agent to {action}")
            return
        self.message.setText("")
        self.console.spawn(self._command(action, *target), f"agent {action} {target[1]}")

    async def _command(self, action: str, agent: str, proc: str) -> None:
        assert self.client is not None
        try:
            await getattr(self.client, action)(agent, proc)
        except AgentError as exc:
            self.message.setText(str(exc))
            return
        self.console.timeline.fault(f"agent {agent}: {action} {proc}")  # like any fault

    def refresh(self) -> None:
        """Timer tick: redraw from the client's current table (no broker call)."""
        if self.client is None:
            return
        agents = self.client.agents()
        state = "" if self.client.connected else "  (broker unreachable: retrying)"
        self.title.setText(f"agents on {self.client.broker_url}: {len(agents)}{state}")
        now = time.time()
        seen: set[tuple[str, ...]] = set()
        for name, view in agents.items():
            agent_item = self._item((name,), None)
            self._fill(agent_item, view.cells(now), view.state)
            agent_item.setToolTip(0, f"agent {name} on host {view.host} (pid {view.pid}, "
                                     f"version {view.version})")
            seen.add((name,))
            for proc in view.procs:
                key = (name, proc.proc)
                self._fill(self._item(key, agent_item), proc.cells(), proc.state)
                seen.add(key)
        for key in [key for key in self._items if key not in seen]:
            item = self._items.pop(key)
            parent = item.parent()
            if parent is not None:
                parent.removeChild(item)
            else:
                self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))

    def _item(self, key: tuple[str, ...], parent: QTreeWidgetItem | None) -> QTreeWidgetItem:
        item = self._items.get(key)
        if item is None:
            item = QTreeWidgetItem(parent) if parent is not None else QTreeWidgetItem(self.tree)
            item.setData(0, Qt.ItemDataRole.UserRole, key)
            for column in NUMERIC:
                item.setTextAlignment(column, Qt.AlignmentFlag.AlignRight |
                                      Qt.AlignmentFlag.AlignVCenter)
            self._items[key] = item
            if parent is not None:
                parent.setExpanded(True)
        return item

    @staticmethod
    def _fill(item: QTreeWidgetItem, values: tuple[str, ...], state: str) -> None:
        for column, text in enumerate(values):
            if item.text(column) != text:
                item.setText(column, text)
        item.setForeground(1, QColor(STATE_COLORS.get(state, "#444")))
