"""Build the wsconsole packages: PyInstaller one-folder bundle, then .tar.gz and .deb on Linux.

    python packaging/build.py [--out dist] [--work build/pyinstaller] [--no-deb] [--no-tar]

Uses only PyInstaller and dpkg-deb (nothing is downloaded at build time). The .deb installs
the bundle in /opt/wsconsole, `wsconsole` and `wsconsole-gui` in /usr/bin, the .desktop
entry and the icon system-wide, and depends on the few system libraries the bundled Qt loads
from the host (checked with ldd: every library the bundle needs and does not carry must map
to a package in SYSTEM_LIBS, or the build stops). Prints one JSON line per artefact with its
size and the build time. On Windows and macOS it builds the bundle only; the installers are
made by packaging/windows/wsconsole.iss and packaging/macos/make_dmg.sh (see
docs/packaging.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "wsconsole.spec"
NAME = "wsconsole"

# Shared libraries the bundle loads from the host (PyInstaller leaves out libc, libGL and
# friends by design: they must match the machine's drivers) -> the Debian package providing
# them. Optional ones (a platform theme, a plugin for another windowing system) are
# Recommends: Qt falls back without them.
SYSTEM_LIBS: dict[str, tuple[str, bool]] = {
    "libc.so.6": ("libc6", True),
    "libm.so.6": ("libc6", True),
    "libdl.so.2": ("libc6", True),
    "libpthread.so.0": ("libc6", True),
    "librt.so.1": ("libc6", True),
    "libresolv.so.2": ("libc6", True),
    "libGL.so.1": ("libgl1", True),
    "libGLX.so.0": ("libglx0", True),
    "libGLdispatch.so.0": ("libglvnd0", True),
    "libEGL.so.1": ("libegl1", True),
    "libdrm.so.2": ("libdrm2", True),
    "libxcb.so.1": ("libxcb1", True),
    "libxcb-icccm.so.4": ("libxcb-icccm4", True),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", True),
    "libwayland-client.so.0": ("libwayland-client0", False),
    "libwayland-cursor.so.0": ("libwayland-cursor0", False),
    "libwayland-egl.so.1": ("libwayland-egl1", False),
    "libgtk-3.so.0": ("libgtk-3-0", False),
    "libgdk-3.so.0": ("libgtk-3-0", False),
}
# Not linked but needed at run time: fontconfig's configuration (the bundled library reads
# /etc/fonts), at least one font, and the keyboard data libxkbcommon reads.
EXTRA_DEPENDS = ["libfontconfig1", "fonts-dejavu-core | fonts-liberation2 | fonts-freefont-ttf",
                 "libxkbcommon0", "xkb-data"]


def version() -> str:
    """The app version from wsconsole/__init__.py (no import: the build Python may differ)."""
    text = (ROOT / "wsconsole" / "__init__.py").read_text()
    found = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    if not found:
        raise SystemExit("no __version__ in wsconsole/__init__.py")
    return found.group(1)


def report(kind: str, path: Path | None = None, **fields: object) -> None:
    """One JSON line per step, sizes in bytes."""
    record: dict[str, object] = {"event": kind, **fields}
    if path is not None:
        record["path"] = str(path)
        record["bytes"] = dir_size(path) if path.is_dir() else path.stat().st_size
    print(json.dumps(record), flush=True)


def dir_size(path: Path) -> int:
    """Bytes of every regular file below `path` (symlinks not followed)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


ICON_SCRIPT = """
import sys
from pathlib import Path
from PySide6.QtCore import QSize
from PySide6.QtWidgets import QApplication
app = QApplication([])
from wsconsole.gui.icon import app_icon
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
icon = app_icon()
for name, size in (("wsconsole.png", 256), ("wsconsole.ico", 256), ("wsconsole.icns", 256)):
    image = icon.pixmap(QSize(size, size)).toImage()
    if not image.save(str(out / name)):
        sys.exit(f"Qt could not write {name}")
"""


def make_icons(folder: Path) -> Path:
    """Render the app icon (drawn in code, gui/icon.py) as .png, .ico and .icns with Qt."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    subprocess.run([sys.executable, "-c", ICON_SCRIPT, str(folder)], check=True, env=env,
                   cwd=ROOT)
    return folder


def build_bundle(out: Path, work: Path) -> Path:
    """Run PyInstaller on the spec; returns dist/wsconsole (the one-folder bundle)."""
    began = time.monotonic()
    icons = make_icons(work / "icons")
    subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--distpath", str(out), "--workpath", str(work), str(SPEC)],
        check=True, cwd=ROOT, env={**os.environ, "WSCONSOLE_ICONS": str(icons)},
    )
    bundle = out / NAME
    report("bundle", bundle, seconds=round(time.monotonic() - began, 1))
    return bundle


def host_libraries(bundle: Path) -> set[str]:
    """Sonames the bundle's ELF files need that the bundle itself does not carry (via ldd)."""
    carried = {p.name for p in bundle.rglob("*.so*")}
    lib_dirs = sorted({str(p.parent) for p in bundle.rglob("*.so*")})
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(lib_dirs)}
    needed: set[str] = set()
    for path in [*bundle.rglob("*.so*"), bundle / NAME]:
        if not path.is_file() or path.is_symlink():
            continue
        result = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env=env)
        for line in result.stdout.splitlines():
            soname = line.strip().split(" ", 1)[0]
            if "=>" in line and soname not in carried and not soname.startswith("ld-linux"):
                needed.add(soname)
    return needed


def deb_depends(bundle: Path) -> tuple[list[str], list[str]]:
    """Depends and Recommends for the .deb; stops the build on an unknown host library."""
    needed = host_libraries(bundle)
    unknown = sorted(needed - set(SYSTEM_LIBS))
    if unknown:
        raise SystemExit(f"the bundle needs host libraries with no package mapping: {unknown}; "
                         "add them to SYSTEM_LIBS in packaging/build.py")
    depends = sorted({SYSTEM_LIBS[s][0] for s in needed if SYSTEM_LIBS[s][1]})
    libc, glibc = platform.libc_ver()
    if libc == "glibc" and glibc and "libc6" in depends:
        # PyInstaller bundles link against the build machine's glibc: no older one will do
        depends[depends.index("libc6")] = f"libc6 (>= {glibc})"
    recommends = sorted({SYSTEM_LIBS[s][0] for s in needed if not SYSTEM_LIBS[s][1]})
    return depends + EXTRA_DEPENDS, recommends


def build_tar(bundle: Path, out: Path, arch: str) -> Path:
    """wsconsole-VERSION-linux-ARCH.tar.gz holding the wsconsole/ folder."""
    target = out / f"{NAME}-{version()}-linux-{arch}.tar.gz"
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=NAME)
    report("tar.gz", target)
    return target


def build_deb(bundle: Path, out: Path, compress: str = "xz",
              icon_png: Path | None = None) -> Path:
    """A .deb made with dpkg-deb: /opt/wsconsole, /usr/bin wrappers, desktop entry, icon."""
    if shutil.which("dpkg-deb") is None:
        raise SystemExit("dpkg-deb is not installed (apt-get install dpkg)")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    depends, recommends = deb_depends(bundle)
    stage = out / "deb-root"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(bundle, stage / "opt" / NAME, symlinks=True)
    usr_bin = stage / "usr" / "bin"
    usr_bin.mkdir(parents=True)
    for name, extra in ((NAME, ""), (f"{NAME}-gui", " gui")):
        wrapper = usr_bin / name
        wrapper.write_text(f'#!/bin/sh\nexec /opt/{NAME}/{NAME}{extra} "$@"\n')
        wrapper.chmod(0o755)
    apps = stage / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    shutil.copy(ROOT / "resources" / "wsconsole.desktop", apps / "wsconsole.desktop")
    icons = stage / "usr" / "share" / "icons" / "hicolor" / "scalable" / "apps"
    icons.mkdir(parents=True)
    svg = ROOT / "resources" / "icons" / "wsconsole.svg"
    shutil.copy(svg, icons / "wsconsole.svg")
    if icon_png is not None and icon_png.is_file():
        raster = stage / "usr" / "share" / "icons" / "hicolor" / "256x256" / "apps"
        raster.mkdir(parents=True)
        shutil.copy(icon_png, raster / "wsconsole.png")
    docs = stage / "usr" / "share" / "doc" / NAME
    docs.mkdir(parents=True)
    (docs / "copyright").write_text(
        "wsconsole: MIT license (see the project's pyproject.toml).\n"
        "Bundled: Qt 6 and PySide6 (LGPLv3), Valkey (BSD-3-Clause), CPython (PSF).\n")
    control = stage / "DEBIAN"
    control.mkdir()
    installed_kib = dir_size(stage) // 1024
    fields = {
        "Package": NAME,
        "Version": version(),
        "Architecture": arch,
        "Maintainer": "wsconsole maintainers <maintainers@wsconsole.invalid>",
        "Installed-Size": str(installed_kib),
        "Depends": ", ".join(depends),
        "Recommends": ", ".join(recommends),
        "Section": "net",
        "Priority": "optional",
        "Homepage": "https://github.com/wsconsole/wsconsole",
        "Description": "console for WebSocket and real-time systems\n"
                       " Monitor, debug and break WebSocket endpoints: a reconnecting client,\n"
                       " a local multi-node harness with its own broker, fault injection,\n"
                       " endpoint diagnostics and support bundles. Self-contained bundle.",
    }
    (control / "control").write_text("".join(f"{k}: {v}\n" for k, v in fields.items() if v))
    target = out / f"{NAME}_{version()}_{arch}.deb"
    began = time.monotonic()
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compress}", "--build", str(stage),
                    str(target)], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(stage)
    report("deb", target, seconds=round(time.monotonic() - began, 1), depends=depends,
           recommends=recommends)
    return target


def main(argv: list[str] | None = None) -> int:
    """Build what this platform can build; exit non-zero on the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller")
    parser.add_argument("--no-tar", action="store_true", help="skip the .tar.gz")
    parser.add_argument("--no-deb", action="store_true", help="skip the .deb")
    parser.add_argument("--deb-compress", choices=("xz", "gzip", "none"), default="xz",
                        help="payload compression of the .deb (xz: smallest, gzip: fastest)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(out, args.work.resolve())
    if sys.platform.startswith("linux"):
        arch = platform.machine().lower()
        if not args.no_tar:
            build_tar(bundle, out, arch)
        if not args.no_deb:
            icon_png = args.work.resolve() / "icons" / "wsconsole.png"
            build_deb(bundle, out, args.deb_compress, icon_png)
    report("done", seconds=round(time.monotonic() - began, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
