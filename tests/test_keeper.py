"""A user's node under the keeper (harness/keeper.py via procs.spawn(keeper=True)): its whole
tree paused together, stopped together (a child that left the group included), its exit
status passed on, a command that cannot start reported."""

from __future__ import annotations

import signal

import pytest

from tests.support import pid_alive, until
from wsconsole.harness import procs

TREE = "sleep 300 & echo $!; setsid sleep 301 & echo $!; exec sleep 302"


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[-1].split()[0]


async def test_the_tree_pauses_and_stops_together_and_its_status_is_passed_on() -> None:
    child = await procs.spawn(["/bin/sh", "-c", TREE], "tree", keeper=True, stderr_pipe=True)
    grandchild = int(await child.stdout.readline())
    escaped = int(await child.stdout.readline())  # setsid: out of the node's process group
    assert child.keeper_pid is not None and child.pid != child.keeper_pid
    assert {child.pid, child.keeper_pid} <= procs.live_groups()
    child.pause()
    await until(lambda: _state(child.pid) == "T" and _state(grandchild) == "T",
                "the node's group stopped", 5)
    assert _state(child.keeper_pid) != "T", "the keeper watches on while the node is paused"
    child.resume()
    code = await child.stop(signal.SIGTERM, 5)
    assert code == -signal.SIGTERM  # the node's own exit, as if it had no keeper
    for pid in (child.pid, grandchild, escaped, child.keeper_pid):
        await until(lambda pid=pid: not pid_alive(pid), f"pid {pid} gone", 5)
    assert not {child.pid, child.keeper_pid} & procs.live_groups()


async def test_a_command_that_cannot_start_is_an_error_with_its_reason() -> None:
    with pytest.raises(OSError, match="No such file or directory"):
        await procs.spawn(["/nonexistent/server"], "bad", keeper=True)
