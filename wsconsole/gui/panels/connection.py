"""Connection panel: named connections side by side, a form per profile, a live state badge.

Bad input (URL, header line, Origin, CA file, numbers) is refused in place: the offending
field turns red and the message says what is wrong; nothing is started until it is fixed.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.app.options import KINDS, OPTIONS, SIO_TRANSPORTS, TOKEN_MODES, OptionsError
from wsconsole.app.profiles import Profile
from wsconsole.app.session import Session
from wsconsole.app.targets import core_options
from wsconsole.core.lifecycle import State
from wsconsole.gui.theme import badge_style

_ERROR_STYLE = "border: 1px solid #c0392b; background: #fdecea;"


class ConnectionPanel(QWidget):
    """List of connections on top, the selected one's settings and live status below."""

    profiles_changed = Signal()

    def __init__(self, console: Console, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console

        self.list = QListWidget()
        self.list.setMaximumHeight(76)
        self.new_button = QPushButton("New")
        self.remove_button = QPushButton("Remove")
        list_buttons = QHBoxLayout()
        list_buttons.addWidget(self.new_button)
        list_buttons.addWidget(self.remove_button)
        list_buttons.addStretch(1)

        self.badge = QLabel("CLOSED")
        self.badge.setStyleSheet(badge_style("CLOSED"))
        self.countdown = QLabel("")
        self.rtt = QLabel("RTT -")
        status_row = QHBoxLayout()
        status_row.addWidget(self.badge)
        status_row.addWidget(self.countdown, 1)
        status_row.addWidget(self.rtt)

        self.fields: dict[str, QWidget] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.name_edit = self._field("name", QLineEdit(), form, "Name")
        self.url_edit = self._field("url", QLineEdit(placeholderText="ws://host:port/path"),
                                    form, "URL")
        self.kind_box = self._field("kind", QComboBox(), form, "Kind")
        for key, label in KINDS.items():
            self.kind_box.addItem(label, key)
        sio_row = QHBoxLayout()
        self.sio_path_edit = QLineEdit(placeholderText="socket.io")
        self.sio_namespaces_edit = QLineEdit(placeholderText="namespaces (/)")
        self.sio_auth_edit = QLineEdit(placeholderText='auth {"token": ...}')
        self.sio_transport = QComboBox()
        for transport in SIO_TRANSPORTS:
            self.sio_transport.addItem(transport, transport)
        for key, widget in (("sio_path", self.sio_path_edit),
                            ("sio_namespaces", self.sio_namespaces_edit),
                            ("sio_auth", self.sio_auth_edit),
                            ("sio_transport", self.sio_transport)):
            self.fields[key] = widget
            sio_row.addWidget(widget, 2 if key == "sio_auth" else 1)
        form.addRow("Socket.IO", sio_row)

        def show_kind_rows() -> None:  # the Socket.IO row only where it means something
            form.setRowVisible(sio_row, self.kind_box.currentData() == "socketio")

        self.kind_box.currentIndexChanged.connect(show_kind_rows)
        show_kind_rows()
        self.headers_edit = self._field("headers", QPlainTextEdit(), form, "Headers")
        self.headers_edit.setPlaceholderText("Name: value, one per line")
        self.headers_edit.setMaximumHeight(54)
        self.subprotocols_edit = self._field("subprotocols", QLineEdit(), form, "Subprotocols")
        self.token_edit = self._field("token", QLineEdit(), form, "Token")
        self.token_edit.setEchoMode(QLineEdit.EchoMode.PasswordEchoOnEdit)
        token_source = QHBoxLayout()
        self.token_command_edit = QLineEdit(placeholderText="or a command printing one")
        self.token_url_edit = QLineEdit(placeholderText="or a URL answering one")
        for key, widget in (("token_command", self.token_command_edit),
                            ("token_url", self.token_url_edit)):
            self.fields[key] = widget
            token_source.addWidget(widget)
        form.addRow("Token from", token_source)
        self.token_mode = self._field("token_mode", QComboBox(), form, "Token via")
        for mode in TOKEN_MODES:
            self.token_mode.addItem(mode, mode)
        self.origin_edit = self._field("origin", QLineEdit(placeholderText="(none)"), form,
                                       "Origin")
        ca_row = QHBoxLayout()
        self.ca_edit = QLineEdit(placeholderText="system CAs")
        self.fields["ca_file"] = self.ca_edit
        self.ca_browse = QPushButton("\u2026")
        self.ca_browse.setMaximumWidth(28)
        self.insecure_box = QCheckBox("insecure")
        self.fields["insecure"] = self.insecure_box
        ca_row.addWidget(self.ca_edit, 1)
        ca_row.addWidget(self.ca_browse)
        ca_row.addWidget(self.insecure_box)
        form.addRow("CA file", ca_row)
        self.harness_box = QCheckBox("harness protocol")
        self.fields["harness"] = self.harness_box
        self.rooms_edit = QLineEdit(placeholderText="rooms to join")
        self.fields["rooms"] = self.rooms_edit
        harness_row = QHBoxLayout()
        harness_row.addWidget(self.harness_box)
        harness_row.addWidget(self.rooms_edit, 1)
        form.addRow("Mode", harness_row)

        self.backoff_initial = self._spin("backoff_initial", 0.0, 3600.0, 0.1)
        self.backoff_factor = self._spin("backoff_factor", 1.0, 10.0, 0.1)
        self.backoff_cap = self._spin("backoff_cap", 0.0, 3600.0, 1.0)
        self.backoff_jitter = self._spin("backoff_jitter", 0.0, 60.0, 0.1)
        self.max_attempts = QSpinBox(minimum=0, maximum=1_000_000, specialValueText="unlimited")
        self.fields["max_attempts"] = self.max_attempts
        form.addRow("Backoff s", _labelled(("init", self.backoff_initial),
                                           ("x", self.backoff_factor),
                                           ("cap", self.backoff_cap),
                                           ("jit", self.backoff_jitter), stretch=False))
        self.ping_interval = self._spin("ping_interval", 0.0, 3600.0, 1.0)
        self.ping_timeout = self._spin("ping_timeout", 0.1, 3600.0, 1.0)
        self.pongs_edit = QLineEdit(placeholderText="auto")
        self.pongs_edit.setMaximumWidth(110)
        self.fields["pongs"] = self.pongs_edit
        form.addRow("Heartbeat s", _labelled(("ping", self.ping_interval),
                                             ("timeout", self.ping_timeout),
                                             ("pongs", self.pongs_edit)))
        self.stable_after = self._spin("stable_after", 0.0, 3600.0, 1.0)
        self.stable_after.setToolTip("a connection open this long starts the backoff over")
        form.addRow("Reconnect", _labelled(("attempts", self.max_attempts),
                                           ("stable after s", self.stable_after)))

        self.connect_button = QPushButton("Connect")
        self.disconnect_button = QPushButton("Disconnect")
        buttons = QHBoxLayout()
        buttons.addWidget(self.connect_button)
        buttons.addWidget(self.disconnect_button)
        buttons.addStretch(1)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #c0392b;")
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        settings = QWidget()
        settings_layout = QVBoxLayout(settings)
        settings_layout.setContentsMargins(0, 0, 0, 0)
        settings_layout.addLayout(form)
        settings_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(settings)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list)
        layout.addLayout(list_buttons)
        layout.addLayout(status_row)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(scroll, 1)

        self.new_button.clicked.connect(self.new_connection)
        self.remove_button.clicked.connect(self._remove_selected)
        self.connect_button.clicked.connect(self.connect_selected)
        self.disconnect_button.clicked.connect(self._disconnect_selected)
        self.ca_browse.clicked.connect(self._browse_ca)
        self.list.currentItemChanged.connect(self._selection_changed)
        console.on_change.append(self.sync_list)

        self.timer = QTimer(self, interval=200)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.load_profile(Profile())
        self.sync_list()

    # -- construction helpers
    def _field(self, key: str, widget: QWidget, form: QFormLayout, label: str) -> QWidget:
        self.fields[key] = widget
        form.addRow(label, widget)
        return widget

    def _spin(self, key: str, lo: float, hi: float, step: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox(minimum=lo, maximum=hi, singleStep=step, decimals=2)
        self.fields[key] = box
        return box

    # -- list of sessions
    def selected_name(self) -> str | None:
        """Name of the selected connection."""
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def sync_list(self) -> None:
        """Mirror the console's sessions in the list (keeping the selection)."""
        current = self.selected_name()
        names = list(self.console.sessions)
        existing = [self.list.item(i).data(Qt.ItemDataRole.UserRole)
                    for i in range(self.list.count())]
        if existing != names:
            self.list.blockSignals(True)
            self.list.clear()
            for name in names:
                item = QListWidgetItem(name)
                item.setData(Qt.ItemDataRole.UserRole, name)
                self.list.addItem(item)
            self.list.blockSignals(False)
            target = current if current in names else (names[0] if names else None)
            if target is not None:
                self.list.setCurrentRow(names.index(target))
            else:
                self.load_profile(Profile())
        self._label_items()

    def _label_items(self) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            name = item.data(Qt.ItemDataRole.UserRole)
            session = self.console.sessions.get(name)
            if session is not None:
                item.setText(f"{name} \u2014 {session.state.value}")

    def _selection_changed(self, current: QListWidgetItem | None, _prev: object = None) -> None:
        if current is None:
            return
        session = self.console.sessions.get(current.data(Qt.ItemDataRole.UserRole))
        if session is not None:
            self.load_profile(session.profile)

    def new_connection(self) -> Session:
        """Add a connection with a fresh name, pre-filled from the form where it is valid."""
        try:
            base = self.profile_from_form()
        except OptionsError:
            base = Profile()
        index = len(self.console.sessions) + 1
        name = f"conn{index}"
        while name in self.console.sessions:
            index += 1
            name = f"conn{index}"
        base.name = name
        session = self.console.add_session(base)
        self.list.setCurrentRow(list(self.console.sessions).index(name))
        self.profiles_changed.emit()
        return session

    def _remove_selected(self) -> None:
        name = self.selected_name()
        if name is not None:
            self.console.spawn(self.console.remove_session(name), f"remove {name}")
            self.profiles_changed.emit()

    # -- form <-> profile
    def load_profile(self, profile: Profile) -> None:
        """Show a profile in the form."""
        for name, widget in self.fields.items():
            value = getattr(profile, name)
            if isinstance(widget, QLineEdit):
                widget.setText(profile.name if name == "name" else profile.text(name))
            elif isinstance(widget, QPlainTextEdit):
                widget.setPlainText(profile.text(name))
            elif isinstance(widget, QComboBox):
                widget.setCurrentIndex(max(0, widget.findData(value)))
            elif isinstance(widget, QCheckBox):
                widget.setChecked(value)
            elif isinstance(widget, QDoubleSpinBox | QSpinBox):
                widget.setValue(value or 0)  # 0 shows "off" / "unlimited"
        self._mark({})

    def form_values(self) -> dict[str, object]:
        """What the form holds, as typed (a Profile built from it checks every value)."""
        values: dict[str, object] = {}
        for name, widget in self.fields.items():
            if isinstance(widget, QLineEdit):
                values[name] = widget.text()
            elif isinstance(widget, QPlainTextEdit):
                values[name] = widget.toPlainText()
            elif isinstance(widget, QComboBox):
                values[name] = widget.currentData()
            elif isinstance(widget, QCheckBox):
                values[name] = widget.isChecked()
            elif isinstance(widget, QDoubleSpinBox | QSpinBox):
                values[name] = widget.value()
        values["max_attempts"] = values["max_attempts"] or None  # the spin box's "unlimited"
        return values

    def profile_from_form(self) -> Profile:
        """The profile the form describes; OptionsError names the fields that are wrong."""
        return Profile(**self.form_values())

    def _mark(self, problems: dict[str, str]) -> None:
        for key, widget in self.fields.items():
            widget.setStyleSheet(_ERROR_STYLE if key in problems else "")
            option = OPTIONS.get(key)
            widget.setToolTip(problems.get(key, option.help if option else ""))
        self.message.setText("\n".join(problems.values()))

    # -- actions
    def connect_selected(self) -> bool:
        """Validate the form; if fine, (re)connect the selected connection. False if refused."""
        name = self.selected_name()
        try:
            profile = self.profile_from_form()
            core_options(profile)  # what the core itself refuses, shown here too
        except OptionsError as exc:
            self._mark(exc.messages(cli=False))
            return False
        except ValueError as exc:  # ClientOptionsError
            self._mark({"url": str(exc)})
            return False
        if name is not None and profile.name != name:
            self._mark({"name": "to use another name, add a New connection"})
            return False
        self._mark({})
        if name is None:
            try:
                self.console.add_session(profile)
            except ValueError as exc:
                self._mark({"name": str(exc)})
                return False
            name = profile.name
            self.sync_list()
        self.console.spawn(self.console.connect(name, profile), f"connect {name}")
        self.profiles_changed.emit()
        return True

    def _disconnect_selected(self) -> None:
        name = self.selected_name()
        if name is not None:
            self.console.spawn(self.console.disconnect(name), f"disconnect {name}")

    def _browse_ca(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CA certificates", "", "PEM (*.pem *.crt)")
        if path:
            self.ca_edit.setText(path)

    # -- live status
    def refresh(self) -> None:
        """Timer tick: badge, countdown, RTT and the list labels."""
        self._label_items()
        name = self.selected_name()
        session = self.console.sessions.get(name) if name else None
        state = session.state if session is not None else State.CLOSED
        if self.badge.text() != state.value:
            self.badge.setText(state.value)
            self.badge.setStyleSheet(badge_style(state.value))
        countdown = session.countdown() if session is not None else None
        if countdown:
            self.countdown.setText(countdown)
        elif session is not None and session.last_error and state is not State.OPEN:
            self.countdown.setText(session.last_error[:120])
        else:
            self.countdown.setText("")
        rtt = session.rtt if session is not None else None
        self.rtt.setText("RTT -" if rtt is None else f"RTT {rtt * 1000:.1f} ms")


def _labelled(*pairs: tuple[str, QWidget], stretch: bool = True) -> QHBoxLayout:
    """A form row of small labelled fields, left-aligned unless `stretch` is off."""
    row = QHBoxLayout()
    for label, widget in pairs:
        row.addWidget(QLabel(label))
        row.addWidget(widget)
    if stretch:
        row.addStretch(1)
    return row
