"""Real agents for tests: `wsconsole agent` subprocesses against a real broker, and the
clean-up of every process they started (by the PIDs in their state files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.support import ProcessRegistry, free_port, pid_alive, wait_for
from wsconsole.harness.procs import child_argv, kill_group

SECRET = "agents-test-secret"
SECRET_ENV = "WSCONSOLE_TEST_AGENT_SECRET"


def start_agent(procs: ProcessRegistry, broker_url: str, name: str, state_dir: Path,
                *extra: str) -> subprocess.Popen[bytes]:
    """`wsconsole agent` as a child (its log in state_dir/agent.log)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, SECRET_ENV: SECRET}
    argv = child_argv("agent", "--broker", broker_url, "--name", name, "--secret-env",
                      SECRET_ENV, "--state-dir", str(state_dir), *extra)
    return procs.start(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       start_new_session=True)


def node_args(broker_url: str) -> list[str]:
    """A demo node's arguments: the broker, a free port on loopback, no auth."""
    return ["--redis", broker_url, "--host", "127.0.0.1", "--port", str(free_port()),
            "--no-auth"]


def recorded_pids(state_dir: Path) -> list[int]:
    """The PIDs of the processes an agent's state file lists."""
    try:
        state = json.loads((state_dir / "agent.json").read_text())
    except (OSError, ValueError):
        return []
    return [int(item["pid"]) for item in state.get("procs", []) if item.get("pid")]


def stop_agent(agent: subprocess.Popen[bytes], state_dir: Path, pids: list[int] = ()) -> None:
    """SIGTERM the agent (it stops its processes), then SIGKILL by PID whatever of its
    processes (from its state file, and `pids`) is still there."""
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)
    for pid in {*recorded_pids(state_dir), *pids}:
        if pid_alive(pid):
            kill_group(pid)
            wait_for(lambda pid=pid: not pid_alive(pid), 5)
