"""`wsconsole gui` / `wsconsole screenshot`: usage errors exit 2 with a message; a real
offscreen screenshot is a PNG of the window."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PySide6.QtGui import QImage

from tests.support import SCALE

ENV = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


def _wsconsole(*args: str, timeout: float = 60 * SCALE,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wsconsole", *args], capture_output=True,
                          text=True, timeout=timeout, env={**ENV, **(env or {})},
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["gui", "--url", "http://example.com"], "ws:// or wss://"),
        (["--url", "ws://"], "no host"),
        (["gui", "--swarm", "-1"], "--swarm"),
        (["screenshot", "out.txt"], ".png"),
        (["screenshot", "/no/such/dir/out.png"], "does not exist"),
        (["screenshot", "x.png", "--size", "big"], "--size"),
        (["screenshot", "x.png", "--kill-after", "20"], "--kill-after must be between"),
        (["screenshot", "x.png", "--expand", "nodes"], "--expand nodes: one of"),
        (["screenshot", "x.png", "--swarm-dead", "20"], "--swarm-dead needs"),
    ],
)
def test_usage_errors_exit_2(args: list[str], words: str) -> None:
    done = _wsconsole(*args)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert "Traceback" not in done.stderr


def test_gui_without_display_is_a_usage_error() -> None:
    env = {k: v for k, v in ENV.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run([sys.executable, "-m", "wsconsole", "--no-harness"],
                          capture_output=True, text=True, timeout=60 * SCALE, env=env,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "no display" in done.stderr and "Traceback" not in done.stderr


def test_screenshot_renders_the_window(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "shot.png"
    done = _wsconsole("screenshot", str(out), "--after", "0.5", "--no-harness",
                      "--size", "1200x800", "--settings", str(tmp_path / "s.ini"))
    assert done.returncode == 0, done.stderr
    image = QImage(str(out))
    assert not image.isNull()
    assert (image.width(), image.height()) == (1200, 800)  # no dock widens the window


def test_screenshot_of_docks_alone_leaves_the_users_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config"
    env = {"XDG_CONFIG_HOME": str(config), "HOME": str(tmp_path)}
    out = tmp_path / "docks.png"
    done = _wsconsole("screenshot", str(out), "--after", "0.5", "--no-harness", "--size",
                      "900x700", "--expand", "all", "--grab", "Timeline", "--grab",
                      "Heartbeat lab", env=env)
    assert done.returncode == 0, done.stderr
    image = QImage(str(out))
    assert image.width() == 900 and 100 < image.height() <= 700
    assert not (config / "wsconsole").exists()  # a scratch settings file, not the user's
    wrong = _wsconsole("screenshot", str(out), "--after", "0", "--no-harness", "--grab",
                       "Nope", env=env)
    assert wrong.returncode == 2 and "--grab 'Nope': no such dock" in wrong.stderr
