"""`make bench` machinery at a tiny size: every benchmark runs once and writes its report.

Benchmarks are not tests (issue 7): this proves the benchmark starts everything it needs,
drives it with the real load generator and writes docs-shaped results, asserting the
structure and that traffic really flowed, never speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import ensure_node_modules, percentile, summarize
from benchmarks.report import markdown, verdicts
from benchmarks.wsclient import mask_frame
from tests.support import SCALE
from wsconsole.core.frames import parse_frame

ROOT = Path(__file__).resolve().parent.parent


def test_masked_client_frame_parses_back() -> None:
    frame = mask_frame(1, b'{"t":1.5}' * 20)
    parsed, used = parse_frame(frame)  # type: ignore[misc]
    assert used == len(frame)
    assert parsed.masked and parsed.payload == b'{"t":1.5}' * 20


def test_statistics() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(101)), 99) == 99
    block = summarize([3, None, 1, 2])
    assert (block["median"], block["min"], block["max"]) == (2, 1, 3)


def test_verdicts_say_missed_when_missed() -> None:
    doc = {
        "fanout": {
            "wsconsole": {"bounded_per_s": 200_000, "equal_cpu_us": 3.0},
            "node-socketio": {"bounded_per_s": 100_000, "equal_cpu_us": 8.0},
        },
        "capacity": {"opened_per_s": 3000, "held": 10_000, "connections": 10_000,
                     "rss_per_conn_kib": 12.5},
    }
    result = dict(verdicts(doc))
    assert result[next(t for t in result if "3x Node" in t)].startswith("missed: 200,000 vs")
    assert "(2.00x)" in result[next(t for t in result if "3x Node" in t)]
    assert result[next(t for t in result if "0.5x" in t)].startswith("met: 3.00 vs 8.00")
    assert result[next(t for t in result if "2,500/s" in t)].startswith("met")
    assert result[next(t for t in result if "10 KiB" in t)] == "missed: 12.50 KiB"
    assert "not measured" in result[next(t for t in result if "1,000,000" in t)]


def _quick(tmp_path: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    argv = [sys.executable, "-m", "benchmarks", "--quick", "--repeat", "1",
            "--out", str(tmp_path), *extra]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=280 * SCALE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((tmp_path / "benchmarks.json").read_text())


def _assert_fanout(fan: dict) -> None:  # type: ignore[type-arg]
    assert "not_run" not in fan, fan
    steps = fan["runs"][0]["steps"]
    # traffic really flowed: every subscriber got every message of the first step in time
    assert steps[0]["delivered_ratio"] == 1.0, steps[0]
    assert steps[0]["p50_ms"] <= steps[0]["p99_ms"]
    # the servers' CPU is measured; one tiny step can round to 0 at the kernel's 10 ms tick
    # (a single-process contender at its lowest rate), the run as a whole cannot
    assert max(step["cpu_us_per_delivery"] for step in steps) > 0, steps
    assert fan["saturation_per_s"] > 0 and fan["loadgen_cpu_max_pct"] is not None


@pytest.mark.timeout(300)
def test_quick_run_writes_every_section(tmp_path: Path) -> None:
    """One tiny run of every benchmark and contender, through `python -m`; the load
    generator is Node.js `ws` (npm installs it under benchmarks/.node on first use)."""
    reason = ensure_node_modules(timeout=60 * SCALE)
    if reason is not None:
        pytest.skip(f"the load generator needs Node.js: {reason}")
    doc = _quick(tmp_path)
    for name in ("wsconsole", "node-socketio", "python-socketio", "websockets-broadcast"):
        _assert_fanout(doc["fanout"][name])
    cap = doc["capacity"]
    assert cap["held"] == cap["connections"] == cap["runs"][0]["node_reports"]
    assert cap["rss_per_conn_kib"] is not None and cap["opened_per_s"] > 0
    for label in ("jitter", "no_jitter"):
        run = doc["storm"][label]["runs"][0]
        assert run["dropped"] == run["back"] == run["clients"], run
        assert doc["storm"][label]["all_back_s"] > 0
    # without jitter every client waits the full first backoff (1 s) before coming back
    assert doc["storm"]["no_jitter"]["all_back_s"] >= 1.0
    win = doc["window"]
    assert "not_run" not in win, win
    step = next(iter(win["rates"].values()))
    assert step["kept_up"] and step["lag_p99_ms"] is not None
    assert win["runs"][0]["memory"]["held"] == win["frames_held"]
    assert win["most_frames_per_s"] > 0 and win["plain_client_frames_per_s"] > 0
    lanes = doc["timeline"]  # every lane painted at every scroll position, both windows
    assert "not_run" not in lanes, lanes
    assert lanes["runs"][0]["rows"] == lanes["lanes"] + 1  # the swarm's band and its lanes
    assert lanes["paint_30s"]["p50_ms"]["median"] > 0 and lanes["kill_batch_ms"]["median"] > 0
    proxy = doc["proxy"]  # every message came back on both paths, both were timed
    assert proxy["received_ratio"] == 1.0 and proxy["direct_p50_ms"] and proxy["proxy_p50_ms"]
    for mode in ("ephemeral", "aof_everysec", "aof_always"):
        per = doc["persistence"][mode]
        assert per["burst_per_s"] > 0 and per["single_p50_ms"] <= per["single_p99_ms"], per
    text = (tmp_path / "benchmarks.md").read_text()
    pressure = doc["pressure"]  # every round's two steps and the overload step ran
    assert len(pressure["rounds"]) == 3, pressure
    for both in pressure["rounds"]:  # the paused ones read again and got everything after
        assert both["all_reading"]["delivered_ratio"] == 1.0, both
        assert both["paused"]["delivered_ratio"] > 0, both
    assert pressure["slow_step"] in [both["paused"] for both in pressure["rounds"]]
    assert pressure["overload_step"]["sent"] > 0
    assert pressure["overload_step"]["node_rss_peak_mb"] > 0
    for heading in ("## Targets", "## Fan-out", "## Backpressure", "## Handshakes",
                    "## Reconnect storm",
                    "## Window ingest", "## Timeline", "## Proxy overhead",
                    "## Broker persistence"):  # fmt: skip
        assert heading in text
    assert text == markdown(doc)


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--repeat", "0", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=30 * SCALE,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--repeat" in proc.stderr
    assert not (tmp_path / "benchmarks.json").exists()


@pytest.mark.parametrize("only", ["nonsense"])
def test_unknown_benchmark_is_a_usage_error(only: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", only], cwd=ROOT,
                          capture_output=True, text=True, timeout=30 * SCALE)  # fmt: skip
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
