"""Heartbeat lab panel: shape how a connection answers the server's pings, send pings and pongs
of your own, read what the server's heartbeat is, and play dead with part of the swarm.

Per connection (a WebSocket session): pongs auto / off / delayed by N ms / with a wrong
payload (core/heartbeat.py, applied in the client's frame tap, kept across reconnects),
pings with a chosen payload or in bursts (round trips shown), unsolicited pongs. The
server's side is measured while it runs: its ping interval, how long it kept the client
once the pongs stopped, and a warning when it has no heartbeat or one slower than typical
proxy idle timeouts. The Timeline shows the lab's marks and the server's reaction.

For the swarm: a share of its clients stop answering (or answer late), and the panel shows
how often the server dropped them and after how long (swarm/fleet.py figures).

Every action runs as a console task; the readings refresh on a 1 Hz timer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.core.client import ReconnectingClient
from wsconsole.core.errors import ClientError
from wsconsole.core.heartbeat import WRONG_PAYLOAD, PongPolicy

MODES = {"auto": "answer at once", "off": "withhold (play dead)", "delay": "answer late",
         "wrong": "answer with a wrong payload"}
_WARN = "color: #c0392b;"


def policy_of(mode: QComboBox, delay: QDoubleSpinBox, payload: QLineEdit | None) -> PongPolicy:
    """The policy a mode box, a delay (ms) and a payload field describe."""
    chosen = mode.currentData()
    if chosen == "delay":
        return PongPolicy("delay", delay=delay.value() / 1000.0)
    if chosen == "wrong":
        text = payload.text() if payload is not None else ""
        return PongPolicy("wrong", payload=text.encode() if text else WRONG_PAYLOAD)
    return PongPolicy(chosen)


def _mode_box(*modes: str) -> QComboBox:
    box = QComboBox()
    for mode in modes:
        box.addItem(MODES[mode], mode)
    return box


def _delay_box() -> QDoubleSpinBox:
    return QDoubleSpinBox(minimum=0.0, maximum=3_600_000.0, value=1500.0, decimals=0,
                          singleStep=100.0, suffix=" ms")


class HeartbeatPanel(QWidget):
    """The heartbeat lab for one connection and for the swarm."""

    def __init__(self, console: Console, parent: QWidget | None = None,
                 refresh_ms: int = 1000) -> None:
        super().__init__(parent)
        self.console = console
        self._shown = PongPolicy()  # the policy the controls show
        self.conn_box = QComboBox()
        self.mode_box = _mode_box("auto", "off", "delay", "wrong")
        self.delay_box = _delay_box()
        self.payload_edit = QLineEdit(placeholderText=WRONG_PAYLOAD.decode())
        self.apply_button = QPushButton("Apply")
        self.ping_payload = QLineEdit(placeholderText="random")
        self.ping_count = QSpinBox(minimum=1, maximum=100, value=1, prefix="x ")
        self.ping_button = QPushButton("Send ping")
        self.pong_payload = QLineEdit(placeholderText="empty")
        self.pong_button = QPushButton("Send unsolicited pong")
        self.server_label = QLabel("-")
        self.server_label.setWordWrap(True)
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet(_WARN)
        self.warning_label.hide()
        self.message = QLabel()
        self.message.setWordWrap(True)

        mine = QGroupBox("Connection")
        form = QFormLayout(mine)
        form.addRow("connection", self.conn_box)
        pongs = QHBoxLayout()
        for widget in (self.mode_box, self.delay_box, self.payload_edit, self.apply_button):
            pongs.addWidget(widget)
        form.addRow("server's pings", pongs)
        ping = QHBoxLayout()
        for widget in (self.ping_payload, self.ping_count, self.ping_button):
            ping.addWidget(widget)
        form.addRow("ping payload", ping)
        pong = QHBoxLayout()
        pong.addWidget(self.pong_payload)
        pong.addWidget(self.pong_button)
        form.addRow("pong payload", pong)
        form.addRow("server heartbeat", self.server_label)
        form.addRow("", self.warning_label)

        self.swarm_share = QSpinBox(minimum=0, maximum=100, value=25, suffix=" %")
        self.swarm_mode = _mode_box("off", "delay", "wrong")
        self.swarm_delay = _delay_box()
        self.swarm_button = QPushButton("Apply to the swarm")
        self.swarm_label = QLabel("no swarm")
        self.swarm_label.setWordWrap(True)
        swarm = QGroupBox("Swarm")
        swarm_form = QFormLayout(swarm)
        row = QHBoxLayout()
        for widget in (self.swarm_share, QLabel("of the clients"), self.swarm_mode,
                       self.swarm_delay, self.swarm_button):
            row.addWidget(widget)
        swarm_form.addRow("pongs", row)
        swarm_form.addRow("server's reaction", self.swarm_label)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(mine)
        layout.addWidget(swarm)
        layout.addWidget(self.message)
        layout.addStretch(1)

        self.mode_box.currentIndexChanged.connect(self._enable)
        self.swarm_mode.currentIndexChanged.connect(self._enable)
        self.conn_box.currentIndexChanged.connect(self._show_policy)
        self.apply_button.clicked.connect(self.apply_pongs)
        self.ping_button.clicked.connect(self.send_ping)
        self.pong_button.clicked.connect(self.send_pong)
        self.swarm_button.clicked.connect(self.apply_swarm)
        console.on_change.append(self.sync_connections)
        self.sync_connections()
        self._enable()
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    # -- the connection ----------------------------------------------------------------------

    def sync_connections(self) -> None:
        """Mirror the console's sessions in the connection box (keeping the choice)."""
        names = list(self.console.sessions)
        if [self.conn_box.itemText(i) for i in range(self.conn_box.count())] == names:
            return
        current = self.conn_box.currentText()
        self.conn_box.blockSignals(True)
        self.conn_box.clear()
        self.conn_box.addItems(names)
        if current in names:
            self.conn_box.setCurrentText(current)
        self.conn_box.blockSignals(False)
        self._show_policy()

    def _show_policy(self) -> None:
        session = self.console.sessions.get(self.conn_box.currentText())
        if session is not None:
            self._put_policy(session.profile.pongs)

    def _put_policy(self, policy: PongPolicy) -> None:
        self._shown = policy
        self.mode_box.setCurrentIndex(self.mode_box.findData(policy.mode))
        if policy.mode == "delay":
            self.delay_box.setValue(policy.delay * 1000.0)
        self._enable()

    def _enable(self) -> None:
        self.delay_box.setEnabled(self.mode_box.currentData() == "delay")
        self.payload_edit.setEnabled(self.mode_box.currentData() == "wrong")
        self.swarm_delay.setEnabled(self.swarm_mode.currentData() == "delay")

    def _say(self, text: str, error: bool = False) -> bool:
        self.message.setStyleSheet(_WARN if error else "")
        self.message.setText(text)
        return not error

    def apply_pongs(self) -> bool:
        """Answer the chosen connection's server pings as the controls say."""
        name = self.conn_box.currentText()
        try:
            policy = policy_of(self.mode_box, self.delay_box, self.payload_edit)
            self.console.set_pongs(name, policy)
        except (ValueError, ClientError) as exc:
            return self._say(str(exc), error=True)
        return self._say(f"{name}: {policy.describe()}")

    def send_ping(self) -> bool:
        """Send the ping (or the burst) and show the round trips when they are in."""
        text = self.ping_payload.text()
        count = self.ping_count.value()

        async def ping(client: ReconnectingClient) -> str:
            rtts = await client.send_ping(text.encode() if text else None, count)
            shown = ", ".join("lost" if r is None else f"{r * 1000:.1f}" for r in rtts)
            return f"{len(rtts)} ping(s), round trips (ms): {shown}"

        return self._on_client("ping", ping)

    def send_pong(self) -> bool:
        """Send an unsolicited pong with the payload typed."""
        payload = self.pong_payload.text().encode()

        async def pong(client: ReconnectingClient) -> str:
            await client.send_pong(payload)
            return f"unsolicited pong sent ({len(payload)} bytes)"

        return self._on_client("pong", pong)

    def _on_client(self, what: str,
                   action: Callable[[ReconnectingClient], Awaitable[str]]) -> bool:
        """Run `action` on the chosen connection's client in a task; its words (or the
        error) end up under the controls. False when there is no such client."""
        name = self.conn_box.currentText()
        try:
            client = self.console.lab_client(name)
        except ValueError as exc:
            return self._say(str(exc), error=True)

        async def run() -> None:
            try:
                said = await action(client)
            except ClientError as exc:
                self._say(f"{what}: {exc}", error=True)
                return
            self._say(f"{name}: {said}")

        self.console.spawn(run(), f"lab {what} {name}")
        return True

    # -- the swarm ------------------------------------------------------------------------------

    def apply_swarm(self) -> bool:
        """Run the chosen share of the swarm with the chosen policy."""
        swarm = self.console.swarm
        if swarm is None:
            return self._say("no swarm is running", error=True)
        share = self.swarm_share.value() / 100.0
        policy = policy_of(self.swarm_mode, self.swarm_delay, None)

        async def apply() -> None:
            try:
                chosen = await swarm.set_pongs(share, policy)
            except Exception as exc:
                self._say(f"swarm: {exc}", error=True)
                return
            self._say(f"swarm: {chosen} client(s): {policy.describe()}")

        self.console.spawn(apply(), "lab swarm pongs")
        return True

    # -- readings -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Timer tick: what the server's heartbeat is, and the swarm's dead-client figures."""
        try:
            client = self.console.lab_client(self.conn_box.currentText())
        except ValueError:
            self.server_label.setText("- (choose a started WebSocket connection)")
            self.warning_label.hide()
        else:
            if client.pongs != self._shown:  # changed elsewhere (a screenshot plan, a
                self._put_policy(client.pongs)  # profile reconnected): show what runs
            beat = client.server_heartbeat
            text, warning = beat.verdict(time.monotonic())
            self.server_label.setText(f"{text}; {client.pongs.describe()}")
            self.warning_label.setText(warning or "")
            self.warning_label.setVisible(warning is not None)
        self.swarm_label.setText(self.swarm_reaction())

    def swarm_reaction(self) -> str:
        """The swarm's heartbeat-lab figures in words."""
        swarm = self.console.swarm
        if swarm is None:
            return "no swarm"
        latest = swarm.latest
        silent = latest.get("pongs_off_clients") or 0
        drops = latest.get("dead_drops") or 0
        if not silent and not drops:
            return "every client answers"

        def seconds(key: str) -> str:
            value = latest.get(key)
            return "-" if value is None else f"{value / 1000:.2f} s"

        return (f"{silent} client(s) silent now; the server dropped silent clients {drops} "
                f"time(s), after p50 {seconds('dead_drop_p50_ms')}, max "
                f"{seconds('dead_drop_max_ms')}; longest kept {seconds('dead_kept_max_ms')}")


__all__ = ["HeartbeatPanel", "policy_of"]
