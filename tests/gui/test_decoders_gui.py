"""Decoded payloads in the window, offscreen: the Frames view's detail pane shows the tree
(or the decoder's error with the raw bytes), the preview column the summary, the filter
finds what only the decoded form says, the export carries it, "decode as" and a loaded
.proto switch decoders, and the Composer encodes JSON into a decoder's format — end to end
against a real echo server that chose the `msgpack` subprotocol."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import cbor2
import msgpack

from tests.support import ProcessRegistry, free_port, until
from wsconsole.app.console import Console
from wsconsole.core.events import Direction, FrameRecord, Opcode
from wsconsole.core.lifecycle import State
from wsconsole.decoders.protobuf import ProtoSchema
from wsconsole.gui.app import ConsoleApp, GuiOptions
from wsconsole.gui.panels.composer import ComposerPanel
from wsconsole.gui.panels.frames import COLUMNS, FramesPanel

from .conftest import run, start_server

TICK = {"type": "tick", "symbol": "ACME", "price": 101.25, "volume": 1200,
        "book": [{"bid": 101.2, "ask": 101.3}], "raw": {"$bytes": "AP8="}}


def tree_pairs(panel: FramesPanel) -> dict[str, str]:
    """key -> value of the decoded tree's items, every level."""
    found: dict[str, str] = {}
    stack = [panel.detail.tree.topLevelItem(i)
             for i in range(panel.detail.tree.topLevelItemCount())]
    while stack:
        item = stack.pop()
        if item is None:
            continue
        found.setdefault(item.text(0), item.text(1))
        stack.extend(item.child(i) for i in range(item.childCount()))
    return found


def preview_of(panel: FramesPanel, row: int) -> str:
    return panel.model.index(row, len(COLUMNS) - 1).data()


def test_msgpack_end_to_end(qloop, procs: ProcessRegistry, settings_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = start_server(procs, ["-m", "tests.servers", "echo", "--port", str(free_port()),
                                "--subprotocol", "msgpack"])

    async def scenario() -> None:
        app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
        app.start()
        w = app.window
        try:
            conn = w.connection
            conn.url_edit.setText(f"ws://127.0.0.1:{port}/ticks")
            conn.subprotocols_edit.setText("msgpack")
            assert conn.connect_selected(), conn.message.text()
            session = app.console.sessions[conn.selected_name()]
            await until(lambda: session.state is State.OPEN, "the msgpack session", 10)
            await until(lambda: conn.badge.text() == "OPEN", "the OPEN badge", 5)

            composer = w.composer
            composer.target.setCurrentText(session.name)
            composer.format.setCurrentText("MessagePack")
            composer.editor.setPlainText(json.dumps(TICK))
            assert composer.send(), composer.message.text()
            frames = w.frames
            await until(lambda: frames.model.rowCount() >= 2, "the tick and its echo", 10)
            sent = frames.model.row_at(0)
            assert sent is not None and sent.opcode is Opcode.BINARY
            assert sent.payload == msgpack.packb(
                {**TICK, "raw": b"\x00\xff"}, use_bin_type=True)  # the Composer encoded it

            frames.table.selectRow(1)  # the echo, as received
            detail = frames.detail
            assert detail.tabs.currentWidget() is detail.decoded_tab
            assert detail.decoder_line.text().startswith('MessagePack: {"type":"tick"')
            pairs = tree_pairs(frames)
            assert pairs["symbol"] == '"ACME"' and pairs["price"] == "101.25"
            assert pairs["bid"] == "101.2" and pairs["$bytes"] == '"AP8="'
            assert preview_of(frames, 1).startswith('[MessagePack] {"type":"tick"')
            w.resize(1500, 950)
            w.docks["Live plots"].hide()  # room for the table and the tree in the picture
            await until(lambda: frames.width() > 900, "the Frames view to take the room", 5)
            frames.splitter.setSizes([170, 530])
            frames.table.resizeColumnToContents(len(COLUMNS) - 1)
            shots = Path(os.environ.get("WSCONSOLE_SCREENSHOT_DIR", tmp_path))
            shot = shots / "decoded-msgpack.png"
            assert w.grab().save(str(shot)) and shot.stat().st_size > 10_000

            # the filter finds what only the decoded form says (101.25 is a binary float)
            frames.filter_edit.setText('"price":101.25')
            frames.apply_filter()
            assert frames.model.rowCount() == 2
            out = tmp_path / "frames.jsonl"
            assert frames.export(str(out)) == 2
            records = [json.loads(line) for line in out.read_text().splitlines()]
            assert [r["decoder"] for r in records] == ["msgpack", "msgpack"]
            assert records[1]["decoded"] == TICK

            # a bad payload on this msgpack connection: the decoder's error and the raw bytes
            frames.filter_edit.setText("")
            frames.apply_filter()
            composer.format.setCurrentText("Hex")
            composer.editor.setPlainText("93 01")
            assert composer.send()
            await until(lambda: frames.model.rowCount() >= 4, "the bad frame's echo", 10)
            frames.table.selectRow(3)
            assert detail.decoder_line.text().startswith("MessagePack: not MessagePack")
            assert "c0392b" in detail.decoder_line.styleSheet()
            assert tree_pairs(frames)["raw bytes"] == "2 bytes"
            assert preview_of(frames, 3).startswith("[MessagePack] error: not MessagePack")
            assert detail.hex_view.toPlainText().startswith("00000000  93 01")
        finally:
            w.close()
            await app.shutdown()

    run(qloop, scenario(), 60)


def test_decode_as_schema_and_composer_formats(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    console = Console(frame_capacity=100)
    store = console.frames
    panel = FramesPanel(store)
    qtbot.addWidget(panel)
    panel.timer.stop()
    proto = tmp_path / "market.proto"
    proto.write_text(textwrap.dedent("""
        syntax = "proto3";
        package market;
        message Tick { string symbol = 1; double price = 2; }
    """))
    tick = ProtoSchema.load(proto).message_class("market.Tick")(symbol="ACME", price=9.5)
    store.append(FrameRecord("feed", Direction.IN, Opcode.BINARY, tick.SerializeToString()))
    store.append(FrameRecord("feed", Direction.IN, Opcode.BINARY, cbor2.dumps({"t": 1})))
    panel.refresh()
    panel.table.selectRow(0)
    detail = panel.detail
    assert detail.decoded is not None and detail.decoded.decoder is None  # no schema yet
    assert detail.decoder_line.text() == "no decoder reads this payload: see Text / Hex"
    assert detail.tabs.currentWidget() is detail.hex_view

    name = detail.load_schema(str(proto), "market.Tick")  # what the dialog does
    assert name == "protobuf:market.Tick" and detail.decode_as.currentData() == name
    assert detail.decode_as.currentText() == "Protobuf market.Tick"
    assert tree_pairs(panel)["symbol"] == '"ACME"'
    assert preview_of(panel, 0).startswith('[Protobuf market.Tick] {"symbol":"ACME"')
    panel.table.selectRow(1)  # the same connection: its CBOR frame is no Tick
    assert detail.decoder_line.text().startswith("Protobuf market.Tick: ")

    detail.set_decoder("auto")  # back to automatic: CBOR is found by its content
    assert detail.decoder_line.text() == 'CBOR: {"t":1}'
    assert tree_pairs(panel)["t"] == "1"

    composer = ComposerPanel(console)  # it encodes with the same decoders
    qtbot.addWidget(composer)
    formats = [composer.format.itemText(i) for i in range(composer.format.count())]
    assert formats[:5] == ["Text", "JSON", "Hex", "Base64", "File"]
    assert {"MessagePack", "CBOR", "STOMP", "MQTT", "Protobuf market.Tick"} <= set(formats)
    assert composer.encode("CBOR", '{"t": 1}') == cbor2.dumps({"t": 1})
    assert composer.encode("Protobuf market.Tick", '{"symbol": "ACME", "price": 9.5}') == (
        tick.SerializeToString())
    assert composer.encode("STOMP", '{"command": "SEND", "headers": {"destination": "/q"},'
                                    ' "body": "hi"}') == (
        "SEND\ndestination:/q\ncontent-length:2\n\nhi\x00")
    for fmt, text, message in [("MQTT", '{"type": "NOPE"}', "an MQTT packet is an object"),
                               ("CBOR", "{not json", "invalid JSON"),
                               ("MessagePack", "", "write the MessagePack message as JSON")]:
        composer.format.setCurrentText(fmt)
        composer.editor.setPlainText(text)
        assert not composer.send()
        assert message in composer.message.text()
