"""Foundation guards: the Qt binding in use does not leak None, the core stays Qt-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import SCALE


def test_void_qt_methods_do_not_leak_none() -> None:
    """PySide6 6.12.0 on 3.11 drops a None reference per void call; the pin must avoid it.

    Runs in a fresh process so its bare QCoreApplication never meets the GUI tests' QApplication.
    """
    pytest.importorskip("PySide6.QtCore")
    code = (
        "import sys\n"
        "from PySide6 import QtCore\n"
        "app = QtCore.QCoreApplication([])\n"
        "timer = QtCore.QTimer()\n"
        "before = sys.getrefcount(None)\n"
        "for i in range(5000):\n"
        "    timer.setInterval(i % 100 + 1)\n"
        "    app.processEvents()\n"
        "print(before - sys.getrefcount(None))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60 * SCALE)
    # PySide6 6.12.0 on 3.11 does not even get to the end: the process aborts in none_dealloc.
    assert out.returncode == 0, f"the Qt binding crashed: {out.stderr.strip()[:300]}"
    lost = int(out.stdout.strip())
    assert lost < 50, f"None refcount fell by {lost} over 5000 void calls"


def test_core_imports_without_qt() -> None:
    """Importing every headless package pulls in no Qt module (checked in a fresh process)."""
    code = (
        "import sys, importlib, pkgutil, wsconsole\n"
        "for pkg in ('core', 'harness', 'faults', 'swarm', 'scenarios'):\n"
        "    try:\n"
        "        mod = importlib.import_module('wsconsole.' + pkg)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    for info in pkgutil.walk_packages(mod.__path__, mod.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'qasync', 'pyqtgraph')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60 * SCALE,
        check=True,
    )
    assert out.stdout.strip() == ""


def test_cli_version() -> None:
    """The console entry point runs."""
    out = subprocess.run(
        [sys.executable, "-m", "wsconsole", "--version"],
        capture_output=True,
        text=True,
        timeout=30 * SCALE,
    )
    assert out.returncode == 0
    assert out.stdout.startswith("wsconsole ")
