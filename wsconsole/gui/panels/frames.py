"""Frames panel: a virtualized table over the FrameStore, filters, detail pane, JSONL export.

A scope (`set_scope`: some connections and a time range, what a click on the Timeline asks
for) narrows the table on top of the filter, shown in a bar with a button that clears it.

The model pulls new rows from the store on a QTimer (10 Hz) and inserts them in one batch;
the view never gets a signal per frame. Follow-tail only scrolls when the user was already
at the bottom, and scrolling up switches it off, so it never fights the user.
"""

from __future__ import annotations

import datetime
import time
from collections import OrderedDict
from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.framestore import FrameFilter, FrameRow, FrameStore
from wsconsole.core.events import Direction, Opcode
from wsconsole.decoders.base import Decoded
from wsconsole.gui.panels.framedetail import OPCODE_NAMES, FrameDetail
from wsconsole.gui.theme import NOTICE_COLOR, mono

COLUMNS = ("Time", "Conn", "Dir", "Opcode", "Size", "Room", "Seq", "Node", "Preview")
_OPCODE_NAMES = OPCODE_NAMES
_AnyIndex = QModelIndex | QPersistentModelIndex
SCAN_CHUNK = 20_000  # frames a text filter searches between budget checks


class IdBuffer:
    """A growable numpy array of frame ids with cheap appends and drops at the front."""

    def __init__(self) -> None:
        self._buf = np.empty(1024, np.int64)
        self._lo = 0
        self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    def __getitem__(self, row: int) -> int:
        return int(self._buf[self._lo + row])

    def reset(self, ids: np.ndarray) -> None:
        """Replace the content."""
        self._buf = np.empty(max(1024, len(ids) * 2), np.int64)
        self._buf[: len(ids)] = ids
        self._lo, self._hi = 0, len(ids)

    def extend(self, ids: np.ndarray) -> None:
        """Append ids (ascending, larger than those kept)."""
        need = len(self) + len(ids)
        if self._hi + len(ids) > len(self._buf):
            size = max(1024, need * 2)
            fresh = np.empty(size, np.int64)
            fresh[: len(self)] = self._buf[self._lo : self._hi]
            self._buf, self._lo, self._hi = fresh, 0, len(self)
        self._buf[self._hi : self._hi + len(ids)] = ids
        self._hi += len(ids)

    def count_below(self, first_id: int) -> int:
        """How many kept ids are smaller than `first_id` (they were dropped from the store)."""
        return int(np.searchsorted(self._buf[self._lo : self._hi], first_id))

    def drop_front(self, n: int) -> None:
        """Forget the first n ids."""
        self._lo += n

    def array(self) -> np.ndarray:
        """The kept ids (a view)."""
        return self._buf[self._lo : self._hi]


def preview(row: FrameRow, limit: int = 160, decoded: Decoded | None = None) -> str:
    """One-line summary of a frame's payload for the table; `decoded`: its decoded form,
    shown instead of the raw payload ("[MessagePack] {...}", or the decoder's error)."""
    if decoded is not None and decoded.decoder is not None:
        text = decoded.summary if decoded.ok else f"error: {decoded.error}"
        return f"[{decoded.title}] {text}"[:limit].replace("\n", " ")
    if row.opcode is Opcode.CLOSE:
        code = row.close_code if row.close_code is not None else "-"
        return f"close {code} {row.close_reason or ''}".rstrip()
    if row.opcode is Opcode.TEXT:
        text = row.payload[: limit * 4].decode("utf-8", "replace")
        return text[:limit].replace("\n", " ")
    head = row.payload[:32].hex(" ")
    return head + (" ..." if row.size > 32 else "")


class FramesTableModel(QAbstractTableModel):
    """Rows are the ids of the frames that pass the filter; data decoded on demand."""

    def __init__(self, store: FrameStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.filter = FrameFilter.make()
        self.ids = IdBuffer()
        self._scanned = self._scan_start = store.first_id
        self._cache: OrderedDict[int, FrameRow] = OrderedDict()
        self._limit: int | None = None  # paused: frames from this id on wait

    # -- Qt model API
    def rowCount(self, parent: _AnyIndex = QModelIndex()) -> int:
        """Rows shown (frames passing the filter and not dropped)."""
        return 0 if parent.isValid() else len(self.ids)

    def columnCount(self, parent: _AnyIndex = QModelIndex()) -> int:
        """Fixed columns."""
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        """Column titles."""
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def row_at(self, row: int) -> FrameRow | None:
        """The frame shown on `row`, or None if it was dropped meanwhile."""
        if not 0 <= row < len(self.ids):
            return None
        ident = self.ids[row]
        cached = self._cache.get(ident)
        if cached is not None:
            return cached
        try:
            frame = self.store.row(ident)
        except IndexError:
            return None
        self._cache[ident] = frame
        if len(self._cache) > 512:
            self._cache.popitem(last=False)
        return frame

    def data(self, index: _AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """Cell text, alignment and colour."""
        if not index.isValid():
            return None
        frame = self.row_at(index.row())
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if frame is None:
                return "(dropped)" if col == 0 else ""
            return self._cell(frame, col)
        if role == Qt.ItemDataRole.ForegroundRole and frame is not None:
            if frame.notice:  # the server says messages will not come: a reset, a window
                return QColor(NOTICE_COLOR)
            if frame.opcode in (Opcode.PING, Opcode.PONG):
                return QColor("#7a7a7a")
            if frame.opcode is Opcode.CLOSE:
                return QColor("#c0392b")
            if col == 2:
                return QColor("#2e9e44") if frame.direction is Direction.IN else QColor("#1f77b4")
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (4, 6):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _preview(self, frame: FrameRow) -> str:
        decoding = self.store.decoding
        if decoding.differs(frame.conn, frame.opcode):
            return preview(frame, decoded=self.store.decoded(frame))
        return preview(frame)

    def _cell(self, frame: FrameRow, col: int) -> str:
        if col == 0:
            stamp = datetime.datetime.fromtimestamp(frame.wall)
            return stamp.strftime("%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"
        if col == 1:
            return frame.conn
        if col == 2:
            return "\u2193 in" if frame.direction is Direction.IN else "\u2191 out"
        if col == 3:
            return _OPCODE_NAMES.get(frame.opcode, str(int(frame.opcode)))
        if col == 4:
            return str(frame.size)
        if col == 5:
            return frame.room or ""
        if col == 6:
            return "" if frame.seq is None else str(frame.seq)
        if col == 7:
            return frame.node or ""
        return self._preview(frame)

    # -- pulling from the store
    @property
    def paused(self) -> bool:
        """True while the table takes no new frames (the store keeps recording)."""
        return self._limit is not None

    @paused.setter
    def paused(self, value: bool) -> None:
        self._limit = self.store.next_id if value else None

    @property
    def scanning(self) -> float | None:
        """Progress (0..1) of a filter still working through kept frames, else None."""
        end = self.store.next_id if self._limit is None else self._limit
        start = self._scan_start
        if self._scanned >= end or self.filter._pattern is None or end <= start:
            return None
        return max(0.0, min(1.0, (self._scanned - start) / (end - start)))

    def pull(self, budget: float = 0.03) -> tuple[int, int]:
        """Drop rows whose frames left the store, add new matching ones; (removed, added).

        A text filter is applied in chunks until `budget` seconds are used, so re-filtering
        a million frames streams in over a few ticks instead of freezing the window.
        """
        removed = 0
        if len(self.ids):
            removed = self.ids.count_below(self.store.first_id)
            if removed:
                self.beginRemoveRows(QModelIndex(), 0, removed - 1)
                self.ids.drop_front(removed)
                self.endRemoveRows()
        end = self.store.next_id if self._limit is None else min(self._limit,
                                                                 self.store.next_id)
        deadline = time.perf_counter() + budget
        added = 0
        while self._scanned < end:
            lo = max(self._scanned, self.store.first_id)
            hi = end if self.filter._pattern is None else min(end, lo + SCAN_CHUNK)
            new = self.store.match(self.filter, lo, hi)
            self._scanned = hi
            if len(new):
                start = len(self.ids)
                self.beginInsertRows(QModelIndex(), start, start + len(new) - 1)
                self.ids.extend(new)
                self.endInsertRows()
                added += len(new)
            if time.perf_counter() > deadline:
                break
        return removed, added

    def set_filter(self, flt: FrameFilter) -> None:
        """Re-run the filter over every kept frame (in budgeted chunks, see pull)."""
        self.beginResetModel()
        self.filter = flt
        self._cache.clear()
        self.ids.reset(np.empty(0, np.int64))
        self._scanned = self._scan_start = self.store.first_id
        self.endResetModel()
        self.pull()

    def clear(self) -> None:
        """Empty the store and the table."""
        self.beginResetModel()
        self.store.clear()
        self._cache.clear()
        self.ids.reset(np.empty(0, np.int64))
        self._scanned = self._scan_start = self.store.next_id
        if self._limit is not None:
            self._limit = self.store.next_id
        self.endResetModel()


def _clock(wall: float) -> str:
    stamp = datetime.datetime.fromtimestamp(wall)
    return stamp.strftime("%H:%M:%S.") + f"{stamp.microsecond // 100_000}"


class FramesPanel(QWidget):
    """Filter bar, the frames table, and a detail pane with JSON, text and hex."""

    def __init__(self, store: FrameStore, parent: QWidget | None = None,
                 refresh_ms: int = 100) -> None:
        super().__init__(parent)
        self.store = store
        self.model = FramesTableModel(store, self)
        self.last_export: str | None = None

        self.filter_edit = QLineEdit(placeholderText="filter payload / room / node")
        self.filter_edit.setClearButtonEnabled(True)
        self.regex_box = QCheckBox("regex")
        self.dir_boxes = {d: QCheckBox(d.value) for d in Direction}
        self.op_boxes = {op: QCheckBox(name) for op, name in _OPCODE_NAMES.items()}
        for box in (*self.dir_boxes.values(), *self.op_boxes.values()):
            box.setChecked(True)
        self.pause_button = QToolButton(text="Pause", checkable=True)
        self.follow_button = QToolButton(text="Follow", checkable=True)
        self.follow_button.setChecked(True)
        self.clear_button = QPushButton("Clear")
        self.export_button = QPushButton("Export JSONL\u2026")
        self.filter_error = QLabel()
        self.filter_error.setStyleSheet("color: #c0392b;")
        self.status = QLabel()
        self.scope: tuple[frozenset[str], float, float] | None = None
        self.scope_label = QLabel(wordWrap=True)  # a long list of clients must not widen it
        self.scope_clear = QToolButton(text="Show all frames")
        scope_bar = QHBoxLayout()
        scope_bar.addWidget(self.scope_label, 1)
        scope_bar.addWidget(self.scope_clear)
        self.scope_row = QWidget()
        self.scope_row.setLayout(scope_bar)
        scope_bar.setContentsMargins(0, 0, 0, 0)
        self.scope_row.hide()

        bar = QHBoxLayout()
        bar.addWidget(self.filter_edit, 3)
        bar.addWidget(self.regex_box)
        kinds = QHBoxLayout()
        kinds.addWidget(QLabel("direction"))
        for box in self.dir_boxes.values():
            kinds.addWidget(box)
        kinds.addSpacing(12)
        kinds.addWidget(QLabel("opcode"))
        for box in self.op_boxes.values():
            kinds.addWidget(box)
        kinds.addStretch(1)
        bar.addWidget(self.pause_button)
        bar.addWidget(self.follow_button)
        bar.addWidget(self.clear_button)
        bar.addWidget(self.export_button)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        vh = self.table.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(self.table.fontMetrics().height() + 4)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setStretchLastSection(True)
        self.table.setFont(mono())
        char = self.table.fontMetrics().horizontalAdvance("0")
        for col, chars in enumerate((13, 8, 6, 7, 6, 8, 6, 5)):
            self.table.setColumnWidth(col, chars * char + 10)

        self.detail = FrameDetail(store)

        self.splitter = splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.detail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addLayout(kinds)
        layout.addWidget(self.scope_row)
        layout.addWidget(self.filter_error)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.status)
        self.filter_error.hide()

        self._programmatic_scroll = False
        self.filter_edit.textChanged.connect(self._schedule_filter)
        self.regex_box.toggled.connect(self._schedule_filter)
        for box in (*self.dir_boxes.values(), *self.op_boxes.values()):
            box.toggled.connect(self._schedule_filter)
        self.pause_button.toggled.connect(self._set_paused)
        self.scope_clear.clicked.connect(self.clear_scope)
        self.clear_button.clicked.connect(self._clear)
        self.export_button.clicked.connect(self._export_dialog)
        self.table.selectionModel().currentRowChanged.connect(self._show_detail)
        self.detail.decoding_changed.connect(self._decoding_changed)
        self.table.verticalScrollBar().valueChanged.connect(self._user_scrolled)

        self._filter_timer = QTimer(self, singleShot=True, interval=250)
        self._filter_timer.timeout.connect(self.apply_filter)
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    # -- filter
    def _schedule_filter(self) -> None:
        self._filter_timer.start()

    def current_filter(self) -> FrameFilter:
        """The filter the controls and the scope describe (ValueError for a bad regex)."""
        conns, since, until = self.scope if self.scope is not None else (None, None, None)
        return FrameFilter.make(
            text=self.filter_edit.text(),
            regex=self.regex_box.isChecked(),
            directions=[d for d, box in self.dir_boxes.items() if box.isChecked()],
            opcodes=[op for op, box in self.op_boxes.items() if box.isChecked()],
            conns=conns,
            since=since,
            until=until,
        )

    def set_scope(self, conns: list[str], since: float, until: float, label: str) -> None:
        """Show only the frames of `conns` between the wall-clock times `since` and `until`
        (what a Timeline click asks for); the scope bar says so and can clear it."""
        self.scope = (frozenset(conns), since, until)
        names = ", ".join(sorted(conns)[:4]) + (f" and {len(conns) - 4} more"
                                                 if len(conns) > 4 else "")
        span = f"{_clock(since)}\u2013{_clock(until)}"
        self.scope_label.setText(f"<b>Scope:</b> {label} \u2014 {names}, {span}")
        self.scope_label.setToolTip(", ".join(sorted(conns)))
        self.scope_row.show()
        self.follow_button.setChecked(False)
        self.apply_filter()

    def clear_scope(self) -> None:
        """Back to every frame (the filter still applies)."""
        self.scope = None
        self.scope_row.hide()
        self.apply_filter()

    def apply_filter(self) -> None:
        """Re-filter the table now; a bad regex is shown under the bar, not raised."""
        self._filter_timer.stop()
        try:
            flt = self.current_filter()
        except ValueError as exc:
            self.filter_error.setText(str(exc))
            self.filter_error.show()
            return
        self.filter_error.hide()
        self.model.set_filter(flt)
        if self.follow_button.isChecked():
            self._scroll_to_bottom()
        self._update_status()

    # -- pulling
    def refresh(self) -> None:
        """Timer tick: pull a batch from the store and keep the tail in view if following."""
        bar = self.table.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 1
        old_value = bar.value()
        removed, added = self.model.pull()
        if removed and not (self.follow_button.isChecked() and at_bottom):
            # rows vanished above: keep the same frames under the user's eyes
            self._programmatic_scroll = True
            bar.setValue(max(0, old_value - removed))
            self._programmatic_scroll = False
        if (added or removed) and self.follow_button.isChecked() and at_bottom:
            self._scroll_to_bottom()
        self._update_status()

    def _scroll_to_bottom(self) -> None:
        self._programmatic_scroll = True
        self.table.scrollToBottom()
        self._programmatic_scroll = False

    def _user_scrolled(self, value: int) -> None:
        if self._programmatic_scroll:
            return
        bar = self.table.verticalScrollBar()
        if value < bar.maximum() - 1:
            if self.follow_button.isChecked():
                self.follow_button.setChecked(False)
        elif not self.follow_button.isChecked():
            self.follow_button.setChecked(True)

    def _set_paused(self, paused: bool) -> None:
        self.model.paused = paused
        self.pause_button.setText("Resume" if paused else "Pause")
        if not paused:
            self.refresh()

    def _update_status(self) -> None:
        paused = "  [paused]" if self.model.paused else ""
        progress = self.model.scanning
        if progress is not None:
            paused += f"  filtering\u2026 {progress:.0%}"
        self.status.setText(
            f"{self.model.rowCount():,} shown / {len(self.store):,} kept / "
            f"{self.store.dropped:,} dropped (capacity {self.store.capacity:,}){paused}"
        )

    def _clear(self) -> None:
        self.model.clear()
        self._show_detail(QModelIndex())
        self._update_status()

    # -- detail
    def _show_detail(self, current: _AnyIndex, _previous: _AnyIndex | None = None) -> None:
        frame = self.model.row_at(current.row()) if current.isValid() else None
        self.detail.show_frame(frame)

    def _decoding_changed(self) -> None:
        """Another decoder for a connection: previews and a filter on decoded forms change."""
        if self.filter_edit.text():
            self.apply_filter()
        else:
            self.model.dataChanged.emit(self.model.index(0, len(COLUMNS) - 1),
                                        self.model.index(self.model.rowCount() - 1,
                                                         len(COLUMNS) - 1))

    # -- export
    def export(self, path: str, shown_only: bool = True) -> int:
        """Write the shown (default) or all kept frames as JSON lines; returns the count."""
        ids = self.model.ids.array().copy() if shown_only else None
        count = self.store.export_jsonl(path, ids)
        self.last_export = path
        return count

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export frames", "frames.jsonl",
                                              "JSON lines (*.jsonl)")
        if not path:
            return
        try:
            count = self.export(path)
        except OSError as exc:
            self.filter_error.setText(f"export failed: {exc.strerror or exc}")
            self.filter_error.show()
            return
        self.status.setText(f"exported {count:,} frames to {path}")
