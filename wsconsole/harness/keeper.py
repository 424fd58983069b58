"""The keeper: a tiny parent for a user's node, so nothing of it outlives the supervisor.

PDEATHSIG (harness/procs.py) kills only the process it is set on: a user's node started as
`npm start` or through a shell is a tree (sh -> npm -> node, maybe workers), and when the
supervisor is SIGKILLed the grandchildren would live on. So a user's node runs under this
keeper (`python -m wsconsole.harness.keeper --report-fd N --parent PID -- ARGV...`):

- the keeper asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG; checked
  once more after setting it, in case the parent died first), and to adopt every orphan of
  the tree (PR_SET_CHILD_SUBREAPER), even those that left the process group;
- it starts ARGV in a process group of its own and writes that group's id to fd N: the
  supervisor sends its operations (stop signal, SIGKILL, SIGSTOP, SIGCONT) to that group,
  never to the keeper, so a paused node's keeper still watches;
- when the node's main process exits, or the keeper gets SIGTERM/SIGHUP/SIGINT (its parent
  died), everything left of the tree is SIGKILLed: the group, then every process the keeper
  adopted, until it has no child left;
- it exits the way the main process did (the same signal, or the same code), so the
  supervisor reads the node's own exit status.

Only the standard library: it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STOPPING = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
SWEEP_LIMIT = 10.0  # seconds a sweep keeps killing what is left of the tree


def _prctl(option: int, value: int) -> bool:
    """prctl(option, value) on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (Linux /proc)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _kill(pid: int, group: bool) -> None:
    for sig in (signal.SIGCONT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if group else os.kill)(pid, sig)


def sweep(group: int, limit: float = SWEEP_LIMIT) -> None:
    """SIGKILL the node's group and every process adopted here, and reap them all.

    Polls rather than blocks: an orphan may be handed to us (or fork) after a scan, and a
    blocking wait would then wait for it forever. Returns once no child is left, or after
    `limit` seconds.
    """
    me = os.getpid()
    _kill(group, group=True)
    deadline = time.monotonic() + limit
    while True:
        for pid in _children(me):
            _kill(pid, group=False)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # nothing left to reap: the whole tree is gone
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _mirror(status: int) -> int:
    """Exit as the node's main process did: its signal again, or its code."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), sig)
        return 128 + sig
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


def keep(argv: Sequence[str], report_fd: int, parent: int | None) -> int:
    """Run `argv` as a node under this keeper; returns the exit code to leave with."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    report = os.fdopen(report_fd, "w")
    if parent is not None and os.getppid() != parent:
        report.close()
        return 1  # the supervisor is already gone: start nothing
    group: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        if group:
            sweep(group[0])
        os._exit(128 + signum)

    for sig in STOPPING:
        signal.signal(sig, stop)
    try:
        child = subprocess.Popen(list(argv), process_group=0, stdin=subprocess.DEVNULL)
    except OSError as exc:
        report.write(f"error {exc.strerror or exc}: {argv[0]}\n")
        report.close()
        return 127
    group.append(child.pid)
    report.write(f"{child.pid}\n")
    report.close()
    status = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child.pid:
            break
    for sig in STOPPING:
        signal.signal(sig, signal.SIG_IGN)
    sweep(child.pid)
    return _mirror(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m wsconsole.harness.keeper` (and `wsconsole keeper`)."""
    parser = argparse.ArgumentParser(prog="wsconsole keeper", description=__doc__.split("\n")[0])
    parser.add_argument("--report-fd", type=int, required=True, metavar="FD")
    parser.add_argument("--parent", type=int, metavar="PID")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to keep is required after --")
    return keep(command, args.report_fd, args.parent)


if __name__ == "__main__":
    raise SystemExit(main())
