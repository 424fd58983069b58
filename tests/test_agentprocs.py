"""What an agent runs for each role (harness/agentprocs.py `plan`): no processes started."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from wsconsole.harness.agentprocs import ProcError, plan
from wsconsole.harness.procs import child_argv

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "python-broadcast" / "stack.toml"


def test_node_and_worker_roles_run_wsconsole_subcommands() -> None:
    node = plan("node", ["--port", "8101"], {"SECRET": "s"})
    assert node.argv == child_argv("node", "--port", "8101")
    assert node.env is None  # a node inherits the agent's environment, without the secret
    worker = plan("worker", ["--run", "r1"], {"SECRET": "s"})
    assert worker.argv == child_argv("swarm-worker", "--run", "r1")
    assert worker.env is not None and worker.env["SECRET"] == "s"
    assert (worker.stop_signal, worker.stop_timeout) == (signal.SIGTERM, 5.0)


def test_a_role_is_a_whitelist_never_a_command_line() -> None:
    with pytest.raises(ProcError, match="unknown role 'sh'"):
        plan("sh", ["-c", "rm -rf /"])
    with pytest.raises(ProcError, match="list of strings"):
        plan("node", "--port 1")
    with pytest.raises(ProcError, match="list of strings"):
        plan("node", ["--port", 1])


def test_a_stack_node_is_built_from_the_stack_file_on_the_agents_host() -> None:
    launch = plan("stack-node", {"stack": str(EXAMPLE), "node": "n2", "port": 9123,
                                 "redis_url": "redis://10.0.0.5:6379/0"})
    assert launch.argv == ["python", "server.py"] and launch.cwd == str(EXAMPLE.parent)
    assert launch.env is not None
    assert (launch.env["PORT"], launch.env["NODE_ID"]) == ("9123", "n2")
    assert launch.env["REDIS_URL"] == "redis://10.0.0.5:6379/0"
    assert launch.stop_timeout == 5.0


@pytest.mark.parametrize(("args", "problem"), [
    ({"stack": str(EXAMPLE), "node": "n1"}, "give its redis_url"),
    ({"stack": str(EXAMPLE), "node": "web", "redis_url": "redis://x:1"}, "name it n1"),
    ({"stack": "/nonexistent/stack.toml", "redis_url": "redis://x:1"}, "stack file"),
    ({"node": "n1"}, "takes {stack"),
])  # fmt: skip
def test_a_stack_node_with_bad_arguments_is_refused(args: dict, problem: str) -> None:
    with pytest.raises(ProcError, match=problem):
        plan("stack-node", args)
