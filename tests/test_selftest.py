"""`wsconsole --self-test`: every step passes on a working install, and a broken step is named.

Runs the real command in its own process (it starts a broker, two nodes and a balancer, and
SIGKILLs one of them); its own "stop" step checks that none of them is left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import orjson

from tests.support import free_port
from wsconsole.commands.selftest import STEPS


def selftest(*args: str, timeout: float = 120.0) -> tuple[int, list[dict[str, object]], str]:
    """Run `python -m wsconsole --self-test --json ARGS`; (exit code, JSON lines, stderr)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, "-m", "wsconsole", "--self-test", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [orjson.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    return proc.returncode, lines, err.decode()


def test_self_test_passes_every_step_in_order() -> None:
    code, lines, err = selftest("--timeout", "60")
    assert code == 0, (lines, err)
    steps = [line for line in lines if line["event"] == "step"]
    assert [s["step"] for s in steps] == list(STEPS)
    assert all(s["ok"] for s in steps), steps
    by_step = {s["step"]: s for s in steps}
    route = re.search(r"\((n\d+) -> broker -> (n\d+)\)", str(by_step["relay"]["detail"]))
    assert route and route[1] != route[2]  # published on one node, delivered by the other
    assert "killed" in str(by_step["failover"]["detail"])
    assert "RECONNECTING" in str(by_step["failover"]["detail"])
    assert lines[-1] == {"event": "result", "ok": True, "failed_step": None}
    assert "Traceback" not in err


def test_a_dead_broker_fails_the_broker_step_by_name() -> None:
    port = free_port()
    code, lines, err = selftest("--redis", f"redis://127.0.0.1:{port}/0", "--no-qt",
                                "--timeout", "20")
    assert code == 1, (lines, err)
    steps = [line for line in lines if line["event"] == "step"]
    assert [s["step"] for s in steps] == ["broker"] and steps[0]["ok"] is False
    assert f"127.0.0.1:{port}" in str(steps[0]["detail"])
    assert lines[-1]["failed_step"] == "broker"
    assert "Traceback" not in err


def test_a_qt_that_cannot_load_fails_the_qt_step_and_nothing_else() -> None:
    # a platform plugin that does not exist makes Qt abort: the child dies, we name the step
    env_platform = os.environ.get("QT_QPA_PLATFORM")
    os.environ["QT_QPA_PLATFORM"] = "no-such-platform"
    try:
        proc = subprocess.run([sys.executable, "-m", "wsconsole", "selftest", "--json"],
                              capture_output=True, timeout=120)
    finally:
        if env_platform is None:
            os.environ.pop("QT_QPA_PLATFORM", None)
        else:
            os.environ["QT_QPA_PLATFORM"] = env_platform
    lines = [orjson.loads(x) for x in proc.stdout.decode().splitlines() if x.startswith("{")]
    steps = {line["step"]: line["ok"] for line in lines if line["event"] == "step"}
    assert proc.returncode == 1, lines
    assert steps == {**{s: True for s in STEPS[:-1]}, "qt": False}
    assert lines[-1]["failed_step"] == "qt"


def test_bad_redis_url_is_usage() -> None:
    proc = subprocess.run([sys.executable, "-m", "wsconsole", "selftest", "--redis", "http://x"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a Redis URL" in proc.stderr
