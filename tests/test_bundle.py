"""Support bundle: redaction rules, round trip, and clear errors for damaged bundles."""

from __future__ import annotations

import zipfile
from pathlib import Path

import orjson
import pytest

from wsconsole.core.events import Direction, ErrorEvent, FrameRecord, HeartbeatEvent, Opcode
from wsconsole.core.lifecycle import State, Transition
from wsconsole.diagnostics.bundle import (
    BundleError,
    BundleInputs,
    read_bundle,
    write_bundle,
)
from wsconsole.diagnostics.model import DiagnoseOptions, Diagnosis, StepResult, Verdict
from wsconsole.diagnostics.redact import MASK, Redactor, is_secret_name, redact_ini

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize("name, secret", [
    ("token", True), ("access_token", True), ("api_key", True), ("X-Api-Key", True),
    ("Authorization", True), ("Cookie", True), ("password", True), ("client_secret", True),
    ("room", False), ("sid", False), ("Sec-WebSocket-Key", False), ("token_mode", False),
    ("user", False), ("url", False),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_urls_keep_their_shape_and_lose_their_secrets() -> None:
    r = Redactor()
    url = r.url("wss://bob:hunter22@example.test:8443/ws?room=a&token=abc123&api_key=k9&sid=7")
    assert url == (f"wss://{MASK}@example.test:8443/ws?room=a&token={MASK}&api_key={MASK}"
                   "&sid=7")


def test_free_text_loses_known_values_jwts_bearers_and_query_tokens() -> None:
    r = Redactor(["planted-value-42"])
    text = (f"GET /ws?access_token=zzz999&x=1 HTTP/1.1 Authorization: Bearer abcdefgh12345678 "
            f"{JWT} and planted-value-42 and {{\"token\":\"qqq-111\",\"token_mode\":\"query\"}}")
    cleaned = r.text(text)
    for secret in ("zzz999", "abcdefgh12345678", JWT, "planted-value-42", "qqq-111"):
        assert secret not in cleaned
    assert "x=1" in cleaned and '"token_mode":"query"' in cleaned


def test_structures_mask_secret_keys_and_header_pairs() -> None:
    data = {"headers": [["Authorization", "Bearer x"], ["X-Trace", "1"]],
            "nested": {"password": "p", "port": 80}, "url": "ws://h/?token=t0k"}
    assert Redactor().value(data) == {
        "headers": [["Authorization", MASK], ["X-Trace", "1"]],
        "nested": {"password": MASK, "port": 80}, "url": f"ws://h/?token={MASK}"}


def test_ini_settings_mask_secret_keys_and_embedded_json() -> None:
    text = ('[connections]\nprofiles="[{\\"name\\":\\"p\\",\\"token\\":\\"sekrit-1\\"}]"\n'
            "auth/password=sekrit-2\nwindow/width=100\n")
    cleaned = redact_ini(text, Redactor())
    assert "sekrit" not in cleaned and "window/width=100" in cleaned


def diagnosis_with_traffic(token: str) -> Diagnosis:
    """A Diagnosis with one of each captured kind and the token on the wire."""
    d = Diagnosis(DiagnoseOptions(f"ws://127.0.0.1:9/?token={token}", token=token))
    d.steps.append(StepResult("dns", "Name lookup (DNS)", Verdict.OK, "fine", {"a": 1}))
    d.steps.append(StepResult("tcp", "Network connection (TCP)", Verdict.FAIL,
                              "refused <b>", {"port": 9}))
    cap = d.capture
    cap(Transition("c", State.CLOSED, State.CONNECTING, 1.0, 100.0))
    cap(Transition("c", State.CONNECTING, State.OPEN, 1.1, 100.1))
    cap(FrameRecord("c", Direction.OUT, Opcode.TEXT,
                    orjson.dumps({"type": "auth", "token": token}), at=1.2, wall=100.2))
    cap(FrameRecord("c", Direction.IN, Opcode.BINARY, b"\x00\x01\xff", at=1.3, wall=100.3))
    cap(FrameRecord("c", Direction.IN, Opcode.CLOSE, b"\x03\xe9", close_code=1001,
                    close_reason="bye", at=1.4, wall=100.4))
    cap(HeartbeatEvent("c", "pong_received", rtt=0.01, at=1.5, wall=100.5))
    cap(ErrorEvent("c", "closed", "1001 bye", at=1.6, wall=100.6))
    d.finished = 101.0
    return d


def test_round_trip_keeps_frames_and_timeline(tmp_path: Path) -> None:
    token = "tok-PLANTED-123456"
    path = write_bundle(diagnosis_with_traffic(token), tmp_path / "b.zip",
                        BundleInputs(versions={"app": "x"}))
    bundle = read_bundle(path)
    assert bundle.report["verdict"] == "fail"
    assert [f["opcode"] for f in bundle.frames] == ["text", "binary", "close"]
    assert token not in bundle.frames[0]["text"] and MASK in bundle.frames[0]["text"]
    records = list(bundle.frame_records())
    assert records[1].payload == b"\x00\x01\xff" and records[1].opcode == Opcode.BINARY
    assert records[2].close_code == 1001 and records[2].direction == Direction.IN
    assert [e["type"] for e in bundle.timeline] == ["transition", "transition", "heartbeat",
                                                     "error"]
    with zipfile.ZipFile(path) as zf:
        html_text = zf.read("report.html").decode()
    assert "refused &lt;b&gt;" in html_text  # escaped, not markup


def test_damaged_bundles_give_clear_errors(tmp_path: Path) -> None:
    good = write_bundle(diagnosis_with_traffic("tok-xyz-98765"), tmp_path / "good.zip")
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"hello, not a zip at all")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    missing = tmp_path / "missing.zip"
    with zipfile.ZipFile(missing, "w") as zf:
        zf.writestr("frames.jsonl", "")
    bad_line = tmp_path / "badline.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad_line, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data + b"{oops\n" if name == "frames.jsonl" else data)
    cases = {
        not_zip: "not a zip file",
        truncated: "not a zip file",
        missing: "report.json is missing",
        bad_line: "frames.jsonl line 4 is not valid JSON",
        tmp_path / "absent.zip": "does not exist",
    }
    for path, words in cases.items():
        with pytest.raises(BundleError, match=words):
            read_bundle(path)


def test_a_corrupted_member_is_reported_as_damage(tmp_path: Path) -> None:
    good = write_bundle(diagnosis_with_traffic("tok-abc-11111"), tmp_path / "good.zip")
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("frames.jsonl")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start, start + min(info.compress_size, 40)):
        data[i] ^= 0x5A  # flip the compressed bytes: CRC or inflate fails
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="damaged"):
        read_bundle(broken)
