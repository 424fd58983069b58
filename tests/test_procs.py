"""harness/procs.py, the one process keeper: real children, real signals, real process groups."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import SCALE, pid_alive, until, wait_for
from wsconsole.harness import procs

# A shell that starts a grandchild in the same group, prints its PID and waits for it.
WITH_GRANDCHILD = ["sh", "-c", "sleep 60 & echo $!; wait"]
IGNORES_SIGTERM = [
    sys.executable, "-c",
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n",
]  # fmt: skip


def state(pid: int) -> str:
    """The process state letter from /proc (R, S, T for stopped, Z...)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[-1].split()[0]


@pytest.fixture
async def started() -> AsyncIterator[list[procs.Child]]:
    """Children a test starts; any left alive are SIGKILLed by group."""
    children: list[procs.Child] = []
    yield children
    for child in children:
        await child.stop(None)


async def grandchild(child: procs.Child) -> int:
    line = await child.stdout.readline()
    return int(line)


async def test_a_child_runs_in_its_own_process_group(started: list[procs.Child]) -> None:
    child = await procs.spawn(WITH_GRANDCHILD, "shell")
    started.append(child)
    inner = await grandchild(child)
    assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    assert os.getpgid(inner) == child.pid
    assert child.pid in procs.live_groups()


async def test_stop_ends_the_whole_group_and_reaps(started: list[procs.Child]) -> None:
    child = await procs.spawn(WITH_GRANDCHILD, "shell")
    started.append(child)
    inner = await grandchild(child)
    code = await child.stop(signal.SIGTERM, timeout=5.0)
    assert code == -signal.SIGTERM and child.exited.is_set() and not child.alive
    assert wait_for(lambda: not pid_alive(inner), timeout=5), "the grandchild outlived its group"
    assert child.pid not in procs.live_groups()


async def test_stop_kills_a_child_that_ignores_sigterm_at_the_deadline(
    started: list[procs.Child],
) -> None:
    child = await procs.spawn(IGNORES_SIGTERM, "stubborn")
    started.append(child)
    assert await child.stdout.readline() == b"ready\n"
    began = time.monotonic()
    code = await child.stop(signal.SIGTERM, timeout=0.5)
    took = time.monotonic() - began
    assert code == -signal.SIGKILL
    assert 0.4 <= took < 5.0 * SCALE, took


async def test_pause_and_resume_reach_every_process_of_the_group(
    started: list[procs.Child],
) -> None:
    child = await procs.spawn(WITH_GRANDCHILD, "shell")
    started.append(child)
    inner = await grandchild(child)
    child.pause()
    await until(lambda: state(child.pid) == state(inner) == "T", "both processes stopped")
    child.resume()
    await until(lambda: "T" not in (state(child.pid), state(inner)), "both processes running")
    child.pause()  # stop() must still end a paused group
    assert await child.stop(signal.SIGTERM, timeout=5.0) == -signal.SIGTERM


async def test_stderr_goes_to_a_log_file_or_a_bounded_tail(
    tmp_path: Path, started: list[procs.Child]
) -> None:
    script = "import sys\nfor i in range(50): print(f'line {i}', file=sys.stderr)\nprint('out')"
    logged = await procs.spawn([sys.executable, "-c", script], "logged",
                               stderr_log=tmp_path / "child.log")
    tailed = await procs.spawn([sys.executable, "-c", script], "tailed", stderr_lines=3)
    started += [logged, tailed]
    assert [line async for line in logged.lines()] == [b"out\n"]
    assert await tailed.output(timeout=10.0 * SCALE) == b"out\n"
    await logged.wait()
    assert logged.log_tail(2) == "line 48 | line 49"
    assert list(tailed.stderr_tail) == ["line 47", "line 48", "line 49"]
    assert tailed.log_tail(1) == "line 49"
    with pytest.raises(ValueError, match="stderr goes to one place"):
        await procs.spawn(["true"], "both", stderr_log=tmp_path / "x.log", stderr_lines=1)


async def test_a_child_that_outlives_us_logs_its_output_and_is_left_to_its_owner(
    started: list[procs.Child], tmp_path: Path
) -> None:
    log = tmp_path / "out.log"
    child = await procs.spawn(["sh", "-c", "echo to-out; echo to-err >&2; sleep 60"], "free",
                              stdout=False, output_log=log, outlive=True)
    started.append(child)
    assert child.pid not in procs.live_groups()  # no atexit kill (nor PDEATHSIG)
    await until(lambda: log.read_text().split() == ["to-out", "to-err"], "both lines logged")
    with pytest.raises(ValueError, match="one place"):
        await procs.spawn(["true"], "x", output_log=log)  # stdout is a pipe by default
    with pytest.raises(ValueError, match="exclude"):
        await procs.spawn(["true"], "x", stdout=False, keeper=True, outlive=True)


async def test_output_past_its_deadline_kills_the_child(started: list[procs.Child]) -> None:
    child = await procs.spawn(["sleep", "60"], "sleeper")
    started.append(child)
    with pytest.raises(TimeoutError):
        await child.output(timeout=0.2)
    assert await child.wait(5.0) and child.returncode == -signal.SIGKILL


def test_popen_and_stop_sync_for_blocking_callers() -> None:
    proc = procs.popen(["sleep", "60"])
    try:
        assert os.getpgid(proc.pid) == proc.pid and proc.pid in procs.live_groups()
        assert procs.stop_sync(proc, signal.SIGTERM, timeout=5.0) == -signal.SIGTERM
        assert proc.pid not in procs.live_groups()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


PARENT = (
    "import asyncio, json, sys\n"
    "from wsconsole.harness import procs\n"
    "async def main():\n"
    "    child = await procs.spawn(['sh', '-c', 'sleep 60 & echo $!; wait'], 'shell')\n"
    "    inner = int(await child.stdout.readline())\n"
    "    print(json.dumps([child.pid, inner]), flush=True)\n"
    "    if sys.argv[1] == 'hang':\n"
    "        await asyncio.sleep(60)\n"
    "asyncio.run(main())\n"
)


def run_parent(how: str) -> tuple[subprocess.Popen[str], list[int]]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, how], stdout=subprocess.PIPE,
                              text=True)
    assert parent.stdout is not None
    return parent, json.loads(parent.stdout.readline())


def test_an_exiting_parent_takes_the_whole_group_with_it() -> None:
    """The atexit net: a parent that exits without stopping its child kills its group."""
    parent, pids = run_parent("exit")
    try:
        parent.wait(timeout=30)
        assert wait_for(lambda: not [pid for pid in pids if pid_alive(pid)], timeout=10), pids
    finally:
        cleanup(parent, pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PDEATHSIG is Linux only")
def test_a_sigkilled_parent_takes_its_child_with_it() -> None:
    """PDEATHSIG: the kernel kills the direct child (its own children are its business)."""
    parent, pids = run_parent("hang")
    try:
        parent.kill()
        parent.wait(timeout=30)
        assert wait_for(lambda: not pid_alive(pids[0]), timeout=10)
    finally:
        cleanup(parent, pids)


def cleanup(parent: subprocess.Popen[str], pids: list[int]) -> None:
    parent.kill()
    parent.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pids[0], signal.SIGKILL)
