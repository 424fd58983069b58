"""Network panel: each balancer fault as a toggle with its parameters, per backend or all.

A toggle switched on applies the fault through `Console.net_fault` (the same text form as the
harness stdin `net ID ...`, validated by harness/netfaults.py before anything is sent); off
removes that kind through `Console.net_clear`. Parameters edited while a fault is on re-apply
it. A one-shot reset (without `persist`) switches itself off once done. Every change marks the
Timeline and the plots (the console does it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console


@dataclass(frozen=True)
class FaultRow:
    """One fault kind: its default parameters in the short text form, and what they mean."""

    kind: str
    default: str
    hint: str


FAULTS = (
    FaultRow("latency", "200ms 50ms", "delay [jitter], each direction"),
    FaultRow("bandwidth", "100kB/s", "cap per connection and direction"),
    FaultRow("reset", "", "RST every open connection; 'persist' keeps resetting"),
    FaultRow("blackhole", "", "accept, forward nothing (held, then flows)"),
    FaultRow("slice", "16 5ms", "split writes: size [delay]"),
    FaultRow("half_open", "up", "one-way stall: up (to server) or down"),
)


class NetworkPanel(QWidget):
    """Target picker, one toggle + parameter field per fault kind, and a Clear all button."""

    def __init__(self, console: Console, parent: QWidget | None = None,
                 refresh_ms: int = 500) -> None:
        super().__init__(parent)
        self.console = console
        self.active: dict[tuple[str, str], str] = {}  # (target, kind) -> parameters applied
        self.target_box = QComboBox()
        self.target_box.addItem("all")
        self.clear_button = QPushButton("Clear all")
        self.toggles: dict[str, QCheckBox] = {}
        self.params: dict[str, QLineEdit] = {}
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.summary = QLabel("no network fault")
        self.summary.setWordWrap(True)

        top = QHBoxLayout()
        top.addWidget(QLabel("backend"))
        top.addWidget(self.target_box, 1)
        top.addWidget(self.clear_button)
        grid = QGridLayout()
        for row, fault in enumerate(FAULTS):
            toggle = QCheckBox(fault.kind.replace("_", "-"))
            edit = QLineEdit(fault.default)
            edit.setPlaceholderText("no parameters" if not fault.default else fault.default)
            if fault.kind == "blackhole":
                edit.setEnabled(False)
            if fault.kind == "reset":
                edit.setPlaceholderText("persist?")
            hint = QLabel(fault.hint)
            hint.setStyleSheet("color: #777;")
            hint.setWordWrap(True)
            grid.addWidget(toggle, row, 0)
            grid.addWidget(edit, row, 1)
            grid.addWidget(hint, row, 2)
            toggle.toggled.connect(lambda on, k=fault.kind: self.toggle(k, on))
            edit.editingFinished.connect(lambda k=fault.kind: self._edited(k))
            self.toggles[fault.kind] = toggle
            self.params[fault.kind] = edit
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(2, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addLayout(grid)
        layout.addWidget(self.summary)
        layout.addWidget(self.message)
        layout.addStretch(1)

        self.target_box.currentTextChanged.connect(lambda _: self._show_target())
        self.clear_button.clicked.connect(self.clear_all)
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    @property
    def target(self) -> str:
        """The backend the toggles act on ("all" or a node id)."""
        return self.target_box.currentText() or "all"

    def text(self, kind: str) -> str:
        """The fault as the harness parses it: kind and parameter words."""
        return f"{kind} {self.params[kind].text().strip()}".strip()

    def _set_checked(self, kind: str, on: bool) -> None:
        toggle = self.toggles[kind]
        toggle.blockSignals(True)
        toggle.setChecked(on)
        toggle.blockSignals(False)

    def _show_target(self) -> None:
        for kind in self.toggles:
            self._set_checked(kind, (self.target, kind) in self.active)
        self._summarize()

    def _summarize(self) -> None:
        if not self.active:
            self.summary.setText("no network fault")
            return
        parts = [f"{target}: {text}" for (target, _), text in sorted(self.active.items())]
        self.summary.setText("active: " + "; ".join(parts))

    def _ready(self) -> bool:
        if self.console.cluster is None or self.console.cluster_state != "ready":
            self.message.setText("no cluster is running")
            return False
        return True

    def toggle(self, kind: str, on: bool) -> bool:
        """Switch fault `kind` on (with the typed parameters) or off for the chosen target."""
        from wsconsole.harness.netfaults import FaultError, fault_from_words

        target = self.target
        if on:
            text = self.text(kind)
            try:
                fault_from_words(text.split())
            except FaultError as exc:
                self.message.setText(f"{kind}: {exc}")
                self._set_checked(kind, False)
                return False
            if not self._ready():
                self._set_checked(kind, False)
                return False
            self._set_checked(kind, True)
            self.message.setText("")
            one_shot = kind == "reset" and "persist" not in text.split()
            task = self.console.spawn(self.console.net_fault(target, text),
                                      f"net {text} on {target}")
            task.add_done_callback(lambda t: self._applied(t, target, kind, text, one_shot))
            return True
        self._set_checked(kind, False)
        if (target, kind) not in self.active or not self._ready():
            self.active.pop((target, kind), None)
            self._summarize()
            return False
        task = self.console.spawn(self.console.net_clear(target, kind),
                                  f"net clear {kind} on {target}")
        task.add_done_callback(lambda t: self._cleared(t, target, kind))
        return True

    def _edited(self, kind: str) -> None:
        if self.toggles[kind].isChecked() and self.active.get((self.target, kind)) != \
                self.text(kind):
            self.toggle(kind, True)

    def _applied(self, task: asyncio.Task[object], target: str, kind: str, text: str,
                 one_shot: bool) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self.message.setText(f"{kind} on {target}: {exc}")
            self.active.pop((target, kind), None)
        elif one_shot:
            self.message.setText(f"reset the open connections of {target}")
        else:
            self.active[(target, kind)] = text
        self._show_target()

    def _cleared(self, task: asyncio.Task[object], target: str, kind: str) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self.message.setText(f"clearing {kind} on {target}: {exc}")
            return
        self.active.pop((target, kind), None)
        self._show_target()

    def clear_all(self) -> bool:
        """Remove every fault from every target."""
        if not self._ready():
            return False
        targets = sorted({target for target, _ in self.active} | {"all"})
        for target in targets:
            task = self.console.spawn(self.console.net_clear(target), f"net clear on {target}")
            task.add_done_callback(lambda t, tg=target: self._cleared_all(t, tg))
        return True

    def _cleared_all(self, task: asyncio.Task[object], target: str) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.message.setText(f"clearing {target}: {task.exception()}")
            return
        for key in [key for key in self.active if key[0] == target]:
            del self.active[key]
        self._show_target()

    def refresh(self) -> None:
        """Timer tick: the target list follows the cluster's nodes; toggles need a cluster."""
        cluster = self.console.cluster
        ids = list(cluster.nodes) if cluster is not None else []
        targets = ["all", *ids]
        if [self.target_box.itemText(i) for i in range(self.target_box.count())] != targets:
            current = self.target_box.currentText()
            self.target_box.blockSignals(True)
            self.target_box.clear()
            self.target_box.addItems(targets)
            if current in targets:
                self.target_box.setCurrentText(current)
            self.target_box.blockSignals(False)
            self._show_target()
        ready = cluster is not None and self.console.cluster_state == "ready"
        for toggle in self.toggles.values():
            toggle.setEnabled(ready)
        self.clear_button.setEnabled(ready)
