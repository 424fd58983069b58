"""Node output panel: what one node printed, line by line with its time stamps.

For a stack (the user's own nodes) that is the node's stdout and stderr as the supervisor
captured them (harness/nodelog.py); for the harness's own nodes, their log file. The panel
pulls the newest lines on a timer (never a signal per line) and appends only what is new;
the same lines are in `<log dir>/<node>.log`, whose folder the panel names.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.harness.nodelog import stamped

TAIL = 2_000  # lines shown (the file keeps everything)


class NodeOutputPanel(QWidget):
    """A node chooser and the chosen node's output, following the Cluster panel's selection."""

    def __init__(self, console: Console, parent: QWidget | None = None,
                 refresh_ms: int = 500) -> None:
        super().__init__(parent)
        self.console = console
        self.node_box = QComboBox()
        self.follow = QToolButton(text="Follow", checkable=True, checked=True)
        self.folder = QLabel("")
        self.folder.setWordWrap(True)
        self.view = QPlainTextEdit(readOnly=True)
        self.view.setMaximumBlockCount(TAIL)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("node"))
        bar.addWidget(self.node_box)
        bar.addWidget(self.follow)
        bar.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.folder)
        self._shown: tuple[str | None, int] = (None, -1)  # node, index of its last line shown
        self.node_box.currentTextChanged.connect(lambda _: self.refresh())
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    def show_node(self, node_id: str) -> None:
        """Show `node_id`'s output (the Cluster panel's Output button)."""
        self.refresh()
        self.node_box.setCurrentText(node_id)

    def refresh(self) -> None:
        """Timer tick: the node list, then the chosen node's new lines."""
        cluster = self.console.cluster
        ids = list(cluster.nodes) if cluster is not None else []
        if [self.node_box.itemText(i) for i in range(self.node_box.count())] != ids:
            current = self.node_box.currentText()
            self.node_box.blockSignals(True)
            self.node_box.clear()
            self.node_box.addItems(ids)
            if current in ids:
                self.node_box.setCurrentText(current)
            self.node_box.blockSignals(False)
        node = self.node_box.currentText() or None
        if cluster is None or node is None:
            if self._shown[0] is not None:
                self.view.clear()
                self._shown = (None, -1)
            return
        folder = getattr(cluster, "log_dir", None)
        self.folder.setText(f"also in {folder}/{node}.log" if folder else "")
        shown_node, last = self._shown
        if node != shown_node:
            self.view.clear()
            last = -1
        try:
            lines = cluster.node_log(node, TAIL)
        except Exception as exc:  # a node that went away between the list and the read
            self.folder.setText(str(exc))
            return
        new = [line for line in lines if line.index > last]
        if new:
            self.view.appendPlainText("\n".join(
                stamped(line.wall, line.stream, line.text, date=False) for line in new))
            last = new[-1].index
            if self.follow.isChecked():
                bar = self.view.verticalScrollBar()
                bar.setValue(bar.maximum())
        self._shown = (node, last)
