"""The one process keeper: every child wsconsole starts goes through here (DESIGN.md: Processes).

What each child gets, whoever starts it (the supervisor's broker, nodes and balancer, the
window's swarm and scenario runs, the self-test's Qt check):

- its command line from `child_argv`: `python -m wsconsole <command> ...` from a source
  checkout, the bundle's own executable running the sub-command when `sys.frozen` is set;
- its OWN process group (a new session): a Ctrl-C at the terminal reaches only us, and every
  signal we send (stop, kill, pause, resume) goes to the whole group, so a child that starts
  children of its own (`npm start` -> node) is stopped, paused and resumed with them;
- death with its parent: on Linux the kernel SIGKILLs it when we die (PDEATHSIG), even by
  SIGKILL; an `atexit` hook SIGKILLs every group still alive when the interpreter exits
  without stopping them. PDEATHSIG reaches only the child itself, so a user's node (a shell
  wrapper, `npm start`, a server with workers) is spawned with `keeper=True`: it runs under
  harness/keeper.py, which owns its process tree and SIGKILLs all of it when we die;
  except where it must outlive us (`outlive=True`: an agent's processes, which an agent
  killed and restarted re-adopts; no PDEATHSIG, no `atexit` kill);
- reaping: a task awaits its exit, sets `Child.exited` and drops it from the `atexit` list;
- a terminate with a deadline (`Child.stop`): signal, wait, then SIGCONT + SIGKILL the group;
- its output captured: stdout as a pipe (`Child.stdout`, `lines()`), or both stdout and
  stderr appended to one log file (`output_log`: a child that outlives us must not write
  into a pipe nobody reads); stderr appended to a log file, kept as the last N lines
  (`Child.stderr_tail`), a pipe of its own (`Child.stderr`), or dropped.

The asyncio `spawn` serves the event loop; `popen` is its blocking twin for code that runs in
a worker thread (the broker). Both set the same options and feed the same `atexit` list.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from wsconsole.core.tasks import Tasks

log = logging.getLogger(__name__)

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STREAM_LIMIT = 1 << 16  # asyncio's default line limit for a child's pipes
KEEPER_TIMEOUT = 15.0  # for a keeper to report the group of the command it started


def child_argv(command: str, *args: str) -> list[str]:
    """argv that runs `wsconsole <command> <args>` as a child of this process."""
    if getattr(sys, "frozen", False):
        return [sys.executable, command, *args]
    return [sys.executable, "-m", "wsconsole", command, *args]


def keeper_argv(report_fd: int, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` under harness/keeper.py, reporting its group on `report_fd`."""
    args = ["--report-fd", str(report_fd), "--parent", str(os.getpid()), "--", *argv]
    if getattr(sys, "frozen", False):
        return [sys.executable, "keeper", *args]
    return [sys.executable, "-m", "wsconsole.harness.keeper", *args]


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a pre-exec hook making the child get SIGKILL when its parent dies (PDEATHSIG).

    The net under `atexit`, which cannot run when the supervisor itself is SIGKILLed. Linux
    ties this to the thread that started the child, so start children from a long-lived
    thread (the loop's thread, or an executor's worker, which lives until shutdown).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    kill = int(signal.SIGKILL)

    def hook() -> None:
        prctl(pr_set_pdeathsig, kill)

    return hook


DIE_WITH_PARENT = _die_with_parent()

# Process groups (by their leader's PID) started here and not yet reaped: the atexit net.
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()


def _track(pid: int) -> None:
    with _LIVE_LOCK:
        _LIVE.add(pid)


def _untrack(pid: int) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(pid)


def live_groups() -> set[int]:
    """Leader PIDs of every child group started here and not yet reaped."""
    with _LIVE_LOCK:
        return set(_LIVE)


def signal_group(pid: int, sig: int) -> bool:
    """Send `sig` to the process group led by `pid` (the process alone where there are no
    groups); False if nothing was there to receive it."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_group(pid: int) -> None:
    """SIGCONT (a stopped process cannot die of a pending signal otherwise) then SIGKILL."""
    if hasattr(signal, "SIGCONT"):
        signal_group(pid, signal.SIGCONT)
    signal_group(pid, getattr(signal, "SIGKILL", signal.SIGTERM))


def alive(pid: int) -> bool:
    """True if a process with this PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@atexit.register
def _kill_leftovers() -> None:
    """At interpreter exit, SIGKILL every child group nobody stopped."""
    for pid in live_groups():
        kill_group(pid)
        _untrack(pid)


def _options(outlive: bool = False) -> dict[str, Any]:
    """Popen options every child gets: its own session (so its own group), and PDEATHSIG
    unless it must outlive us."""
    return {"start_new_session": True, "preexec_fn": None if outlive else DIE_WITH_PARENT}


def popen(
    argv: Sequence[str],
    *,
    stdout: int | Any = DEVNULL,
    stderr: int | Any = DEVNULL,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child from blocking code (a worker thread); reap it with `stop_sync`."""
    proc = subprocess.Popen(
        list(argv), stdin=DEVNULL, stdout=stdout, stderr=stderr, cwd=cwd, env=env, **_options()
    )
    _track(proc.pid)
    return proc


def stop_sync(proc: subprocess.Popen[bytes], sig: int | None, timeout: float = 5.0) -> int | None:
    """Blocking terminate with a deadline: send `sig` to the group (None: SIGKILL at once),
    wait up to `timeout`, then SIGKILL the group; reaped on return (its exit code)."""
    if proc.poll() is None:
        if sig is None:
            kill_group(proc.pid)
        else:
            if hasattr(signal, "SIGCONT"):
                signal_group(proc.pid, signal.SIGCONT)
            signal_group(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %s ignored signal %s for %.1f s; killing it", proc.pid, sig, timeout)
            kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
    if proc.returncode is not None:
        _untrack(proc.pid)
    return proc.returncode


class Child:
    """A child process started by `spawn`, in its own process group, reaped by a task.

    A kept child (`spawn(keeper=True)`): `proc` is its keeper, `pid` the main process of the
    command, whose group every signal goes to, `keeper_pid` the keeper's.
    """

    def __init__(
        self,
        name: str,
        proc: asyncio.subprocess.Process,
        tasks: Tasks,
        log_path: Path | None = None,
        stderr_lines: int = 0,
        group: int | None = None,
    ) -> None:
        self.name = name
        self.proc = proc
        self.group = proc.pid if group is None else group
        self.keeper_pid = None if group is None else proc.pid
        self.log_path = log_path
        self.started = time.monotonic()
        self.exited = asyncio.Event()
        self.stderr_tail: deque[str] = deque(maxlen=max(stderr_lines, 1))
        self.skipped_lines = 0
        self._tasks = tasks
        self._stderr_task = (
            tasks.spawn(self._read_stderr(), f"stderr-{name}") if stderr_lines else None
        )
        self._reaper = tasks.spawn(self._reap(), f"reap-{name}")

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.pid} returncode={self.returncode}>"

    @property
    def pid(self) -> int:
        """The child's PID, which is also its process group's id (a kept child: the PID of
        the command's main process, not of its keeper)."""
        return self.group

    @property
    def returncode(self) -> int | None:
        """The exit code once reaped (negative: the signal that ended it), else None."""
        return self.proc.returncode

    @property
    def alive(self) -> bool:
        """True until the process has been reaped."""
        return self.proc.returncode is None

    @property
    def stdout(self) -> asyncio.StreamReader:
        """The child's stdout pipe (spawned with stdout=True)."""
        if self.proc.stdout is None:
            raise RuntimeError(f"{self.name} was started without a stdout pipe")
        return self.proc.stdout

    @property
    def stderr(self) -> asyncio.StreamReader:
        """The child's stderr pipe (spawned with stderr_pipe=True)."""
        if self.proc.stderr is None or self._stderr_task is not None:
            raise RuntimeError(f"{self.name} was started without a stderr pipe")
        return self.proc.stderr

    async def send_line(self, line: bytes) -> None:
        """Write one line to the child's stdin (spawned with stdin=True) and drain it;
        ConnectionError once the child is gone."""
        writer = self.proc.stdin
        if writer is None:
            raise RuntimeError(f"{self.name} was started without a stdin pipe")
        writer.write(line.rstrip(b"\n") + b"\n")
        await writer.drain()

    async def lines(self, reader: asyncio.StreamReader | None = None) -> AsyncIterator[bytes]:
        """The child's stdout (or `reader`), line by line, until it closes. A line longer
        than the spawn's `limit` is skipped (counted in `skipped_lines`) instead of ending
        the stream."""
        reader = reader or self.stdout
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # the reader dropped what it held of the long line
                self.skipped_lines += 1
                log.warning("%s: an output line over the length limit was skipped", self.name)
                continue
            if not line:
                return
            yield line

    async def _reap(self) -> None:
        try:
            await self.proc.wait()
            if self._stderr_task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        finally:
            if self.proc.returncode is not None:
                _untrack(self.proc.pid)  # a keeper leaves nothing of its node behind
                _untrack(self.group)
            self.exited.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    def send_signal(self, sig: int) -> bool:
        """Send `sig` to the child's whole process group; False once it is gone."""
        if not self.alive:
            return False
        return signal_group(self.group, sig)

    def kill(self) -> None:
        """SIGKILL the group (after SIGCONT, so a paused child dies too); no wait."""
        if self.alive:
            kill_group(self.group)

    def pause(self) -> None:
        """SIGSTOP the group: its sockets stay open, nothing in it runs."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the group."""
        self.send_signal(signal.SIGCONT)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for the exit (and the reaping); False if `timeout` s passed first."""
        if timeout is None:
            await self.exited.wait()
            return True
        try:
            await asyncio.wait_for(self.exited.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        """Terminate with a deadline: SIGCONT + `sig` to the group (None: SIGKILL at once),
        wait up to `timeout` s, then SIGKILL the group. Returns the exit code."""
        if self.alive:
            if sig is None:
                self.kill()
            else:
                self.send_signal(signal.SIGCONT)
                self.send_signal(sig)
            if not await self.wait(timeout):
                log.warning(
                    "%s did not exit within %.1f s of %s; killing it",
                    self.name, timeout, signal.Signals(sig).name if sig else "SIGKILL",
                )  # fmt: skip
                self.kill()
        await self.exited.wait()
        return self.returncode

    async def output(self, timeout: float) -> bytes:
        """All of stdout until the child exits. After `timeout` s (TimeoutError), or when the
        caller is cancelled, the child's group is SIGKILLed (and reaped by its task)."""
        try:
            async with asyncio.timeout(timeout):
                data = await self.stdout.read()
                await self.exited.wait()
        except BaseException:
            self.kill()
            raise
        return data

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the child's stderr (its log file, or the kept tail), one line."""
        text: list[str] = list(self.stderr_tail)
        if self.log_path is not None:
            try:
                text = self.log_path.read_text(errors="replace").strip().splitlines()
            except OSError:
                text = []
        return " | ".join(text[-lines:])


async def spawn(
    argv: Sequence[str],
    name: str,
    *,
    stdout: bool = True,
    stdin: bool = False,
    stderr_log: Path | None = None,
    stderr_lines: int = 0,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    limit: int = STREAM_LIMIT,
    tasks: Tasks | None = None,
    stderr_pipe: bool = False,
    keeper: bool = False,
    output_log: Path | None = None,
    outlive: bool = False,
) -> Child:
    """Start `argv` as a `Child` in its own process group (see the module docstring).

    stdout: a pipe (`Child.stdout`) or /dev/null; stdin: a pipe (`Child.send_line`) or
    /dev/null. `output_log`: stdout and stderr both appended to that file (stdout must be
    False). `outlive`: no PDEATHSIG and no `atexit` kill, the child lives on when we die (the
    caller owns its fate). stderr: appended to `stderr_log`, or its last `stderr_lines`
    lines kept in `Child.stderr_tail`, or a pipe (`Child.stderr`), or /dev/null. `keeper`:
    run it under harness/keeper.py (a user's node, which may start a tree of processes);
    OSError if the command cannot be started. `tasks` owns the reaper and reader tasks (a
    module-wide keeper by default); their failures are logged.
    """
    if sum((stderr_log is not None, bool(stderr_lines), stderr_pipe, output_log is not None)) > 1:
        raise ValueError("stderr goes to one place: a log file, a tail or a pipe")
    if output_log is not None and stdout:
        raise ValueError("stdout goes to one place: a pipe or the output log")
    if outlive and keeper:
        raise ValueError("a kept child dies with us: keeper and outlive exclude each other")
    log_fd: int | None = None
    stderr: int = DEVNULL
    if stderr_log is not None or output_log is not None:
        log_path = stderr_log if stderr_log is not None else output_log
        assert log_path is not None
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        stderr = log_fd
    elif stderr_lines or stderr_pipe:
        stderr = PIPE
    report: tuple[int, int] | None = os.pipe() if keeper else None
    try:
        proc = await asyncio.create_subprocess_exec(
            *(keeper_argv(report[1], argv) if report else argv),
            stdin=PIPE if stdin else DEVNULL,
            stdout=PIPE if stdout else (log_fd if output_log is not None else DEVNULL),
            stderr=stderr,
            env=env,
            cwd=cwd,
            limit=limit,
            pass_fds=(report[1],) if report else (),
            **_options(outlive),
        )
    except BaseException:
        if report:
            os.close(report[0])
        raise
    finally:
        if log_fd is not None:
            os.close(log_fd)
        if report:
            os.close(report[1])
    if not outlive:
        _track(proc.pid)
    group = None
    if report:
        group = await _kept_group(proc, report[0], argv)
    return Child(name, proc, tasks or _TASKS, stderr_log or output_log, stderr_lines, group)


async def _kept_group(proc: asyncio.subprocess.Process, report: int, argv: Sequence[str]) -> int:
    """Read the group id a keeper reports (OSError when the command could not start)."""
    try:
        async with asyncio.timeout(KEEPER_TIMEOUT):
            text = (await asyncio.to_thread(_read_all, report)).strip()
    except BaseException:
        kill_group(proc.pid)
        raise
    if text.isdigit():
        _track(int(text))
        return int(text)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5.0):
            await proc.wait()
    _untrack(proc.pid)
    reason = text.removeprefix("error ") if text else "the keeper exited without starting it"
    raise OSError(f"cannot start {argv[0]!r}: {reason}")


def _read_all(fd: int) -> str:
    """Everything written to a pipe until its writer closes it (then the fd is closed)."""
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


_TASKS = Tasks(prefix="wsconsole-procs")

__all__ = [
    "DIE_WITH_PARENT",
    "Child",
    "alive",
    "child_argv",
    "keeper_argv",
    "kill_group",
    "live_groups",
    "popen",
    "signal_group",
    "spawn",
    "stop_sync",
]
