"""The support bundle: one zip a customer sends back, and the reader the console opens it with.

Layout (every text member passed through the Redactor before it is written):

    report.html      the diagnosis for people: verdicts in plain words, detail one click away
    report.json      the same for tools (format BUNDLE_FORMAT)
    frames.jsonl     captured frames, one JSON object per line (the Frames view's export shape)
    timeline.jsonl   state transitions, heartbeats and errors, one per line, oldest first
    versions.json    app, library, broker and system versions
    settings.json    the options of the run and the app's saved settings, secrets masked
    logs/...         the app's rotated log files, secrets masked
    README.txt       what is in here

`read_bundle(path)` checks the structure and raises `BundleError` with a plain message for
anything that is not an intact bundle (not a zip, a damaged member, a missing or invalid
file), never a traceback.
"""

from __future__ import annotations

import base64
import html
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from wsconsole import __version__
from wsconsole.core.events import ErrorEvent, FrameRecord, HeartbeatEvent, Opcode
from wsconsole.core.lifecycle import Transition
from wsconsole.diagnostics.model import Diagnosis
from wsconsole.diagnostics.redact import Redactor, redact_ini
from wsconsole.errors import WsconsoleError

BUNDLE_FORMAT = "wsconsole-support-bundle/1"
REQUIRED = ("report.json", "frames.jsonl", "timeline.jsonl")
MAX_MEMBER = 512 * 1024 * 1024  # refuse to inflate a member larger than this
MAX_LOG_BYTES = 8 * 1024 * 1024  # newest log bytes copied into a bundle


class BundleError(WsconsoleError):
    """A file that is not an intact support bundle; the message says what is wrong."""


# ---------------------------------------------------------------- records


def frame_dict(index: int, frame: FrameRecord) -> dict[str, Any]:
    """A captured frame as the Frames view exports it (text as text, binary as base64)."""
    out: dict[str, Any] = {
        "id": index, "wall": frame.wall, "conn": frame.conn,
        "direction": frame.direction.value, "opcode": frame.opcode.name.lower(),
        "size": frame.size,
    }
    if frame.close_code is not None:
        out["close_code"] = frame.close_code
    if frame.close_reason:
        out["close_reason"] = frame.close_reason
    if frame.opcode == Opcode.TEXT:
        out["text"] = frame.payload.decode("utf-8", "replace")
    elif frame.payload:
        out["base64"] = base64.b64encode(frame.payload).decode()
    if not frame.fin:
        out["fin"] = False
    if frame.injected:
        out["injected"] = True
    return out


def event_dict(event: Transition | HeartbeatEvent | ErrorEvent) -> dict[str, Any]:
    """A timeline event as one JSON object with a "type"."""
    if isinstance(event, Transition):
        return {"type": "transition", **event.as_dict()}
    if isinstance(event, HeartbeatEvent):
        out: dict[str, Any] = {"type": "heartbeat", "conn": event.conn, "kind": event.kind,
                               "at": event.at, "wall": event.wall}
        if event.rtt is not None:
            out["rtt"] = event.rtt
        return out
    return {"type": "error", "conn": event.conn, "kind": event.kind, "detail": event.detail,
            "at": event.at, "wall": event.wall}


# ---------------------------------------------------------------- HTML

_COLOURS = {"ok": "#2e9e44", "warn": "#c88a00", "fail": "#c62828", "skip": "#777"}
_WORDS = {"ok": "OK", "warn": "Warning", "fail": "Problem", "skip": "Not checked"}


def report_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page: headline, one row per step, technical detail folded."""
    esc = html.escape
    verdict = str(report.get("verdict", "skip"))
    rows = []
    for step in report.get("steps", []):
        v = str(step.get("verdict", "skip"))
        detail = orjson.dumps(step.get("detail", {}), option=orjson.OPT_INDENT_2).decode()
        rows.append(
            f"<tr><td><b>{esc(str(step.get('title', '')))}</b></td>"
            f"<td style='color:{_COLOURS.get(v, '#777')};font-weight:bold'>"
            f"{esc(_WORDS.get(v, v))}</td><td>{esc(str(step.get('summary', '')))}"
            f"<details><summary>Technical detail ({float(step.get('seconds', 0)):.2f} s)"
            f"</summary><pre>{esc(detail)}</pre></details></td></tr>")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.get("started", 0)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>wsconsole diagnosis of {esc(str(report.get('url', '')))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td {{ border-top: 1px solid #ddd; padding: .5em; vertical-align: top; }}
pre {{ background: #f4f4f4; padding: .5em; overflow-x: auto; font-size: 85%; }}
.headline {{ font-size: 1.2em; padding: .6em; border-left: 6px solid
  {_COLOURS.get(verdict, '#777')}; background: #fafafa; }}
</style></head><body>
<h1>Diagnosis of {esc(str(report.get('url', '')))}</h1>
<p class="headline">{esc(str(report.get('headline', '')))}</p>
<p>Run {esc(started)} with wsconsole {esc(str(report.get('app_version', '')))}.
Secrets (tokens, passwords, Authorization headers, cookies) are shown as [REDACTED].</p>
<table>{''.join(rows)}</table>
</body></html>
"""


# ---------------------------------------------------------------- writing


@dataclass
class BundleInputs:
    """What goes into a bundle besides the diagnosis itself."""

    versions: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # JSON-like, redacted on write
    settings_files: dict[str, str] = field(default_factory=dict)  # name -> INI text
    log_files: list[Path] = field(default_factory=list)
    extra_secrets: list[str] = field(default_factory=list)


def diagnosis_report(diagnosis: Diagnosis, redactor: Redactor) -> dict[str, Any]:
    """The report.json content (already redacted)."""
    opts = diagnosis.options
    report = {
        "format": BUNDLE_FORMAT,
        "app_version": __version__,
        "url": redactor.url(opts.url),
        "verdict": diagnosis.verdict.value,
        "headline": diagnosis.headline(),
        "started": diagnosis.started,
        "finished": diagnosis.finished,
        "steps": [step.as_dict() for step in diagnosis.steps],
        "frames": len(diagnosis.capture.frames),
        "events": len(diagnosis.capture.events),
    }
    return redactor.value(report)


def options_settings(diagnosis: Diagnosis) -> dict[str, Any]:
    """The run's options as settings (the Redactor masks the secret ones)."""
    o = diagnosis.options
    return {"url": o.url, "token": o.token, "token_mode": o.token_mode,
            "headers": [list(h) for h in o.headers], "subprotocols": o.subprotocols,
            "origin": o.origin, "ca_file": o.ca_file, "insecure": o.insecure,
            "timeout": o.timeout, "pings": o.pings, "reconnect": o.reconnect,
            "audit": o.audit}


def make_redactor(diagnosis: Diagnosis, inputs: BundleInputs) -> Redactor:
    """A Redactor that knows every secret of this run."""
    opts = diagnosis.options
    redactor = Redactor([opts.token, *inputs.extra_secrets])
    redactor.learn_url(opts.url)
    redactor.learn_headers(opts.headers)
    return redactor


def _tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a text file (logs can be large)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - limit))
        return handle.read().decode("utf-8", "replace")


def write_bundle(diagnosis: Diagnosis, path: str | Path,
                 inputs: BundleInputs | None = None) -> Path:
    """Write the support bundle zip; returns its path. Every text member is redacted."""
    inputs = inputs or BundleInputs()
    redactor = make_redactor(diagnosis, inputs)
    report = diagnosis_report(diagnosis, redactor)
    frames = b"".join(orjson.dumps(redactor.value(frame_dict(i, f))) + b"\n"
                      for i, f in enumerate(diagnosis.capture.frames))
    timeline = b"".join(orjson.dumps(redactor.value(event_dict(e))) + b"\n"
                        for e in diagnosis.capture.events)
    settings = {"diagnose": options_settings(diagnosis), **inputs.settings}
    members: dict[str, bytes] = {
        "report.json": orjson.dumps(report, option=orjson.OPT_INDENT_2),
        "report.html": report_html(report).encode(),
        "frames.jsonl": frames,
        "timeline.jsonl": timeline,
        "versions.json": orjson.dumps(redactor.value(inputs.versions),
                                      option=orjson.OPT_INDENT_2),
        "settings.json": orjson.dumps(redactor.value(settings), option=orjson.OPT_INDENT_2),
    }
    for name, text in inputs.settings_files.items():
        members[f"settings/{Path(name).name}"] = redact_ini(text, redactor).encode()
    for log in inputs.log_files:
        try:
            members[f"logs/{log.name}"] = redactor.text(_tail(log, MAX_LOG_BYTES)).encode()
        except OSError as exc:
            members[f"logs/{log.name}.unreadable"] = str(exc).encode()
    members["README.txt"] = (
        f"wsconsole support bundle ({BUNDLE_FORMAT}), made by wsconsole {__version__}.\n"
        "Open report.html in a browser, or open the whole zip in wsconsole "
        "(Help > Open support bundle) to see its frames and timeline.\n"
        "Secrets were replaced by [REDACTED] before anything was written.\n"
    ).encode()
    # belt and braces: no member may contain a known secret verbatim
    for name, data in members.items():
        members[name] = redactor.text(data.decode("utf-8", "replace")).encode() \
            if name != "report.html" else data
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    tmp.replace(target)
    return target


# ---------------------------------------------------------------- reading


@dataclass
class Bundle:
    """An opened support bundle."""

    path: Path
    report: dict[str, Any]
    frames: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    versions: dict[str, Any]
    members: list[str]

    def frame_records(self) -> Iterable[FrameRecord]:
        """The frames as FrameRecords (for the console's FrameStore)."""
        from wsconsole.core.events import Direction

        for line in self.frames:
            opcode = Opcode[str(line.get("opcode", "text")).upper()] \
                if str(line.get("opcode", "")).upper() in Opcode.__members__ else Opcode.TEXT
            if "text" in line:
                payload = str(line["text"]).encode()
            elif "base64" in line:
                payload = base64.b64decode(str(line["base64"]))
            else:
                payload = b""
            yield FrameRecord(
                conn=str(line.get("conn", "bundle")),
                direction=Direction(line.get("direction", "in")),
                opcode=opcode, payload=payload, fin=bool(line.get("fin", True)),
                close_code=line.get("close_code"), close_reason=line.get("close_reason"),
                injected=bool(line.get("injected", False)),
                at=float(line.get("wall", 0.0)), wall=float(line.get("wall", 0.0)))


def _read_jsonl(zf: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(_read(zf, name).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise BundleError(f"{name} line {number} is not valid JSON: the bundle is "
                              "damaged") from None
        if not isinstance(row, dict):
            raise BundleError(f"{name} line {number} is not a JSON object: the bundle is "
                              "damaged")
        rows.append(row)
    return rows


def _read(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise BundleError(f"{name} is missing: this is not a complete wsconsole support "
                          "bundle") from None
    if info.file_size > MAX_MEMBER:
        raise BundleError(f"{name} is {info.file_size} bytes uncompressed: too large to open")
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise BundleError(f"{name} cannot be read, the bundle is damaged ({exc})") from None
    except Exception as exc:  # zlib.error and friends from a corrupt stream
        raise BundleError(f"{name} cannot be read, the bundle is damaged ({exc})") from None


def _check_frames(rows: list[dict[str, Any]]) -> None:
    for number, row in enumerate(rows, 1):
        if row.get("direction") not in ("in", "out"):
            raise BundleError(f"frames.jsonl line {number} has no valid direction: the bundle "
                              "is damaged")
        if "base64" in row:
            try:
                base64.b64decode(str(row["base64"]), validate=True)
            except ValueError:
                raise BundleError(f"frames.jsonl line {number} has an invalid payload: the "
                                  "bundle is damaged") from None


def read_bundle(path: str | Path) -> Bundle:
    """Open and check a support bundle; BundleError with a plain message if it is not one."""
    source = Path(path)
    if not source.is_file():
        raise BundleError(f"{source} does not exist or is not a file")
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
            try:
                report = orjson.loads(_read(zf, "report.json"))
            except orjson.JSONDecodeError:
                raise BundleError("report.json is not valid JSON: the bundle is damaged") \
                    from None
            if not isinstance(report, dict) or report.get("format") != BUNDLE_FORMAT:
                raise BundleError("report.json is not a wsconsole support bundle report "
                                  f"(expected format {BUNDLE_FORMAT})")
            frames = _read_jsonl(zf, "frames.jsonl")
            _check_frames(frames)
            timeline = _read_jsonl(zf, "timeline.jsonl")
            versions: dict[str, Any] = {}
            if "versions.json" in names:
                try:
                    loaded = orjson.loads(_read(zf, "versions.json"))
                    versions = loaded if isinstance(loaded, dict) else {}
                except orjson.JSONDecodeError:
                    versions = {}
    except zipfile.BadZipFile:
        raise BundleError(f"{source.name} is not a zip file (damaged, truncated or not a "
                          "support bundle)") from None
    except OSError as exc:
        raise BundleError(f"{source} cannot be read: {exc}") from None
    return Bundle(source, report, frames, timeline, versions, names)
