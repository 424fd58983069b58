"""The Intercept panel's connection tab: act on one proxied connection.

Inject a frame to the client or the server, close either side with a chosen code, suppress
or delay pongs on their way to either side, set or clear a network fault (the balancer's
kinds, in the same short text form), and export the connection as a replay scenario. Every
control calls the connection (wsconsole.proxy.relay) or the hub directly; a control that
cannot be done now says why in the panel, never raises into Qt.
"""

from __future__ import annotations

import binascii
from pathlib import Path

import orjson
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.core.events import Opcode
from wsconsole.errors import WsconsoleError
from wsconsole.harness.netfaults import FaultError, fault_from_words, parse_fault
from wsconsole.proxy.hub import ConnectionInfo
from wsconsole.proxy.relay import ProxiedConnection
from wsconsole.scenarios.replay import scenario_text

KINDS = {"text": Opcode.TEXT, "json": Opcode.TEXT, "binary (hex)": Opcode.BINARY,
         "ping": Opcode.PING, "pong": Opcode.PONG}
PONG_MODES = ("pass", "drop", "delay")


class ConnectionControls(QWidget):
    """Pick a proxied connection; inject, close, shape pongs, set faults, export."""

    def __init__(self, console: Console, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.conn_box = QComboBox()
        self.conn_box.setMinimumContentsLength(10)
        self.info = QLabel("no proxied connection yet")
        self.info.setWordWrap(True)
        self.headers = QPlainTextEdit(readOnly=True)
        self.headers.setPlaceholderText("the handshake's request and response headers")
        self.headers.setMaximumHeight(110)
        self.side_box = QComboBox()
        self.side_box.addItems(["client", "server"])
        self.kind_box = QComboBox()
        self.kind_box.addItems(list(KINDS))
        self.payload_edit = QLineEdit()
        self.payload_edit.setPlaceholderText("payload to send")
        self.inject_button = QPushButton("Inject")
        self.close_side = QComboBox()
        self.close_side.addItems(["client", "server"])
        self.code_box = QSpinBox(minimum=1000, maximum=4999, value=4000)
        self.reason_edit = QLineEdit()
        self.reason_edit.setPlaceholderText("reason")
        self.close_button = QPushButton("Close")
        self.pong_boxes: dict[str, QComboBox] = {}
        self.pong_delays: dict[str, QDoubleSpinBox] = {}
        self.fault_edit = QLineEdit("latency 200ms")
        self.fault_button = QPushButton("Apply fault")
        self.clear_button = QPushButton("Clear faults")
        self.export_button = QPushButton("Export as scenario…")
        self.message = QLabel("")
        self.message.setWordWrap(True)

        form = QFormLayout()
        form.addRow("connection", self.conn_box)
        form.addRow(self.info)
        form.addRow("handshake", self.headers)
        form.addRow("inject to", _row(self.side_box, self.kind_box, self.payload_edit,
                                      self.inject_button))
        form.addRow("close", _row(self.close_side, self.code_box, self.reason_edit,
                                  self.close_button))
        for side in ("client", "server"):
            mode = QComboBox()
            mode.addItems(list(PONG_MODES))
            delay = QDoubleSpinBox(minimum=1, maximum=600_000, value=2000, suffix=" ms",
                                   decimals=0, enabled=False)  # for "delay" only
            mode.currentTextChanged.connect(lambda _text, s=side: self.shape_pongs(s))
            delay.editingFinished.connect(lambda s=side: self.shape_pongs(s))
            self.pong_boxes[side], self.pong_delays[side] = mode, delay
            form.addRow(f"pongs to the {side}", _row(mode, delay))
        form.addRow("network", _row(self.fault_edit, self.fault_button, self.clear_button))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(form)
        layout.addWidget(_row(self.export_button, stretch=True))
        layout.addWidget(self.message)
        layout.addStretch(1)

        self.inject_button.clicked.connect(self.inject)
        self.payload_edit.returnPressed.connect(self.inject)
        self.close_button.clicked.connect(self.close_side_now)
        self.fault_button.clicked.connect(self.apply_fault)
        self.clear_button.clicked.connect(self.clear_faults)
        self.export_button.clicked.connect(self._export_dialog)
        self.conn_box.currentTextChanged.connect(lambda _text: self.refresh())

    @property
    def conn(self) -> str:
        """The chosen connection id ("" when none)."""
        return self.conn_box.currentText()

    def _say(self, text: str) -> bool:
        self.message.setText(text)
        return not text.startswith("!")

    def _live(self) -> ProxiedConnection:
        return self.console.proxy.hub.connection(self.conn)

    def inject(self) -> bool:
        """Send the typed payload to the chosen side."""
        kind = self.kind_box.currentText()
        text = self.payload_edit.text()
        try:
            if kind == "json":
                payload = orjson.dumps(orjson.loads(text))
            elif kind == "binary (hex)":
                payload = binascii.unhexlify(text.replace(" ", ""))
            else:
                payload = text.encode()
            self._live().inject(self.side_box.currentText(), KINDS[kind], payload)
        except (orjson.JSONDecodeError, binascii.Error, ValueError, WsconsoleError) as exc:
            return self._say(f"! {exc}")
        return self._say(f"injected {kind} ({len(payload)} bytes) to the "
                         f"{self.side_box.currentText()}")

    def close_side_now(self) -> bool:
        """Close the chosen side with the chosen code (the other side gets 1001)."""
        side, code = self.close_side.currentText(), self.code_box.value()
        try:
            self._live().close(side, code, self.reason_edit.text())
        except WsconsoleError as exc:
            return self._say(f"! {exc}")
        return self._say(f"closed the {side} with {code}")

    def shape_pongs(self, side: str) -> bool:
        """Pongs on their way to `side`: pass, drop or delay (ms)."""
        if not self.conn:
            return False
        mode = self.pong_boxes[side].currentText()
        self.pong_delays[side].setEnabled(mode == "delay")
        try:
            self._live().shape_pongs(side, mode, self.pong_delays[side].value())
        except WsconsoleError as exc:
            return self._say(f"! {exc}")
        return self._say(f"pongs to the {side}: {mode}")

    def apply_fault(self) -> bool:
        """Set the typed network fault on the chosen connection."""
        try:
            kind, params = fault_from_words(self.fault_edit.text().split())
            self.console.proxy.hub.set_fault(self.conn, parse_fault(kind, params))
        except (FaultError, WsconsoleError) as exc:
            return self._say(f"! {exc}")
        return self._say(f"{kind} on {self.conn}")

    def clear_faults(self) -> bool:
        """Remove every fault of the chosen connection."""
        removed = self.console.proxy.hub.clear_fault(self.conn)
        return self._say(f"{removed} fault(s) cleared on {self.conn}")

    def export_scenario(self, path: str) -> bool:
        """Write the chosen connection (open or ended) as a replay scenario file."""
        store = self.console.frames
        try:
            conn = self.console.proxy.har_connection(
                self.conn, store.rows(range(store.first_id, store.next_id)))
            if not conn.sent:
                return self._say(f"! {self.conn} sent nothing to replay")
            Path(path).write_text(scenario_text(conn), encoding="utf-8")
        except (KeyError, OSError) as exc:
            return self._say(f"! cannot export {self.conn}: {exc}")
        return self._say(f"{self.conn} exported to {path} (wsconsole scenario run it)")

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export as a replay scenario",
                                              f"{self.conn or 'proxied'}.toml", "TOML (*.toml)")
        if path:
            self.export_scenario(path)

    def refresh(self) -> None:
        """The connection list (open and ended ones) and the chosen one's handshake."""
        proxy = self.console.proxy
        names = list(reversed(proxy.infos))  # newest first
        if [self.conn_box.itemText(i) for i in range(self.conn_box.count())] != names:
            current = self.conn
            self.conn_box.blockSignals(True)
            self.conn_box.clear()
            self.conn_box.addItems(names)
            self.conn_box.setCurrentText(current if current in names else
                                         (names[0] if names else ""))
            self.conn_box.blockSignals(False)
        info = proxy.infos.get(self.conn)
        live = proxy.hub.connections.get(self.conn)
        for widget in (self.inject_button, self.close_button, self.fault_button,
                       *self.pong_boxes.values()):
            widget.setEnabled(live is not None)
        self.export_button.setEnabled(info is not None)
        if info is None:
            self.info.setText("no proxied connection yet")
            self.headers.setPlainText("")
            return
        shown = handshake_text(info)
        if self.headers.toPlainText() != shown:
            self.headers.setPlainText(shown)
        state = live.lifecycle.state.value if live is not None else "CLOSED"
        origin = next((v for k, v in info.request_headers if k.lower() == "origin"), "-")
        self.info.setText(f"{state} · {info.client} → {info.url} · status {info.status or '-'}"
                          f" · subprotocol {info.subprotocol or '-'} · Origin {origin}")


def handshake_text(info: ConnectionInfo) -> str:
    """The request headers as the client sent them and the upstream's answer."""
    lines = [f"> GET {info.url}  (the client's request)"]
    lines += [f"  {name}: {value}" for name, value in info.request_headers]
    if info.status is not None:
        lines.append(f"< {info.status}  (the server's answer)")
        lines += [f"  {name}: {value}" for name, value in info.response_headers]
    return "\n".join(lines)


def _row(*widgets: QWidget, stretch: bool = False) -> QWidget:
    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        row.addWidget(widget)
    if stretch:
        row.addStretch(1)
    return holder
