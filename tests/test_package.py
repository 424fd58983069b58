"""The packaged app: PyInstaller builds the bundle, the .tar.gz and the .deb, and the bundle
passes its own self-test offscreen (broker binary, node and balancer children started from the
bundle's executable, Qt loading its plugins).

Slow (a build takes one to two minutes here) but it runs in CI; skipped only when PyInstaller
is not installed (`pip install -e '.[package]'`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.support import SCALE

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is None,
                       reason="PyInstaller is not installed (pip install -e '.[package]')"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Run packaging/build.py into a temporary directory once for the module."""
    out = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("work")
    linux = sys.platform.startswith("linux")
    args = [sys.executable, str(ROOT / "packaging" / "build.py"), "--out", str(out),
            "--work", str(work), "--deb-compress", "none"]
    if not (linux and shutil.which("dpkg-deb")):
        args.append("--no-deb")
    result = subprocess.run(args, capture_output=True, text=True, timeout=840 * SCALE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    artefacts = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            record = orjson.loads(line)
            if "path" in record:
                artefacts[record["event"]] = Path(record["path"])
    yield artefacts
    shutil.rmtree(work, ignore_errors=True)


def run_bundle(executable: Path, *args: str,
               timeout: float = 180 * SCALE) -> subprocess.CompletedProcess[str]:
    """Run the bundled executable offscreen with a clean environment (no venv on PATH)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "QT_QPA_PLATFORM": "offscreen", "LANG": "C.UTF-8"}
    return subprocess.run([str(executable), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_the_bundle_passes_its_self_test(built: dict[str, Path]) -> None:
    executable = built["bundle"] / ("wsconsole.exe" if os.name == "nt" else "wsconsole")
    result = run_bundle(executable, "--self-test", "--json")
    lines = [orjson.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[0]["frozen"] is True  # really the bundle, not a Python on PATH
    steps = {line["step"]: line for line in lines if line["event"] == "step"}
    assert all(step["ok"] for step in steps.values()) and "qt" in steps
    assert "_internal" in steps["broker"]["detail"]  # the Valkey binary inside the bundle
    # lean: Qt modules the app does not use are not in the bundle
    qt_libs = {p.name.split(".")[0] for p in built["bundle"].rglob("*Qt6*")}
    for unused in ("libQt6Quick", "libQt6Qml", "libQt6Pdf", "libQt6WebEngineCore"):
        assert unused not in qt_libs
    shipped = run_bundle(executable, "scenario", "list", "--json")
    assert shipped.returncode == 0 and "node-kill" in shipped.stdout


def test_the_bundled_window_runs_the_demo_harness(built: dict[str, Path], tmp_path: Path) -> None:
    executable = built["bundle"] / ("wsconsole.exe" if os.name == "nt" else "wsconsole")
    png = tmp_path / "window.png"
    result = run_bundle(executable, "screenshot", "--after", "3", "--swarm", "3",
                        "--settings", str(tmp_path / "settings.ini"), str(png))
    assert result.returncode == 0, result.stdout + result.stderr
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tar.gz and .deb are Linux")
def test_the_tarball_and_the_deb(built: dict[str, Path], tmp_path: Path) -> None:
    with tarfile.open(built["tar.gz"]) as tar:
        names = set(tar.getnames())
    assert "wsconsole/wsconsole" in names
    assert any(n.endswith("resources/scenarios/node-kill.toml") for n in names)
    if "deb" not in built:
        pytest.skip("dpkg-deb is not installed")
    deb = built["deb"]
    info = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                          check=True).stdout
    fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
    assert fields["Package"] == "wsconsole"
    for package in ("libgl1", "libegl1", "libfontconfig1", "libxkbcommon0", "fonts-dejavu-core"):
        assert package in fields["Depends"]
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    for path in ("./usr/share/applications/wsconsole.desktop",
                 "./usr/share/icons/hicolor/scalable/apps/wsconsole.svg",
                 "./usr/bin/wsconsole", "./usr/bin/wsconsole-gui", "./opt/wsconsole/wsconsole"):
        assert path in listing
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    desktop = (root / "usr/share/applications/wsconsole.desktop").read_text()
    assert "Exec=wsconsole-gui" in desktop and "Icon=wsconsole" in desktop
    version = run_bundle(root / "opt/wsconsole/wsconsole", "--version", timeout=60 * SCALE)
    assert version.returncode == 0 and version.stdout.startswith("wsconsole ")


@pytest.fixture
def expired_tls_port(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS server (thread) on 127.0.0.1 whose certificate expired yesterday; its CA file."""
    import datetime as dt
    import socket
    import ssl
    import threading

    import trustme

    ca = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    cert = ca.issue_cert("127.0.0.1", not_before=now - dt.timedelta(days=30),
                         not_after=now - dt.timedelta(days=1))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                raw.settimeout(5)
                with context.wrap_socket(raw, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], ca_file
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_the_bundle_diagnoses_an_expired_certificate(built: dict[str, Path],
                                                     expired_tls_port: tuple[int, Path]) -> None:
    executable = built["bundle"] / ("wsconsole.exe" if os.name == "nt" else "wsconsole")
    port, ca_file = expired_tls_port
    result = run_bundle(executable, "diagnose", f"wss://127.0.0.1:{port}/", "--ca-file",
                        str(ca_file), "--timeout", "5", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    steps = {x["id"]: x for x in map(orjson.loads, result.stdout.splitlines()) if "id" in x}
    assert steps["tls"]["verdict"] == "fail"
    # the certificate is parsed inside the bundle (cryptography) even though it is not trusted
    assert "certificate has expired" in steps["tls"]["summary"]
    assert steps["tls"]["detail"]["certificate"]["days_left"] < 0
