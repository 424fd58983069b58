"""Frames panel over a big store: a text filter streams in without freezing, pause holds the
table still while the store keeps recording, drops at the front leave the view consistent."""

from __future__ import annotations

import time

from wsconsole.app.framestore import FrameFilter, FrameStore
from wsconsole.core.events import Direction, FrameRecord, Opcode
from wsconsole.gui.panels.frames import FramesPanel


def _fill(store: FrameStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.append(FrameRecord("c1", Direction.IN if i % 2 else Direction.OUT, Opcode.TEXT,
                                 b'{"type":"message","room":"r","seq":%d,"data":"x%d"}' % (i, i)))


def test_text_filter_streams_in_chunks(qtbot) -> None:  # type: ignore[no-untyped-def]
    store = FrameStore(capacity=400_000)
    _fill(store, 300_000)
    panel = FramesPanel(store)
    qtbot.addWidget(panel)
    panel.timer.stop()  # drive the ticks by hand
    panel.refresh()
    assert panel.model.rowCount() == 300_000
    panel.filter_edit.setText('"x1')
    began = time.perf_counter()
    panel.apply_filter()
    first_tick = time.perf_counter() - began
    ticks = 1
    while panel.model.scanning is not None:
        assert "filtering" in panel.status.text()
        panel.refresh()
        ticks += 1
        assert ticks < 1000
    expected = store.match(FrameFilter.make(text='"x1')).tolist()
    assert panel.model.ids.array().tolist() == expected
    print(f"\nfilter over 300k frames: {ticks} ticks, first tick {first_tick * 1000:.0f} ms")
    assert first_tick < 1.0  # one budgeted chunk, not the whole store


def test_pause_and_drops(qtbot) -> None:  # type: ignore[no-untyped-def]
    store = FrameStore(capacity=1000)
    panel = FramesPanel(store)
    qtbot.addWidget(panel)
    panel.timer.stop()
    _fill(store, 500)
    panel.refresh()
    assert panel.model.rowCount() == 500
    panel.pause_button.setChecked(True)
    _fill(store, 300, 500)
    panel.refresh()
    assert panel.model.rowCount() == 500 and "paused" in panel.status.text()
    panel.pause_button.setChecked(False)
    assert panel.model.rowCount() == 800
    _fill(store, 700, 800)  # 1500 appended into 1000 slots: 500 dropped
    panel.refresh()
    assert panel.model.rowCount() == 1000
    assert panel.model.row_at(0).seq == 500
    assert store.dropped == 500 and "500 dropped" in panel.status.text()
    assert "1,000 shown / 1,000 kept /" in panel.status.text()
