#!/usr/bin/env bash
# Builds as much of the macOS installer (Warren-VERSION.pkg) as this machine
# can. It stages the package: the payload tree pkgbuild takes (the app
# bundle with its Info.plist and icon, the CLI, the helper, its LaunchDaemon
# plist, the uninstaller, the log rotation), the pre/postinstall scripts,
# the component plist and productbuild's Distribution.xml, and lints the
# plists and scripts. The darwin binaries can only be linked on a Mac (it
# needs Apple's SDK): they are copied from $WARREN_MACOS_BIN_DIR, or from
# the target dir's x86_64-apple-darwin/release, when there. On a Mac with
# the binaries, pkgbuild and productbuild then make the package; elsewhere
# the script prints the commands that finish the job and still succeeds.
#
# Usage: installer/macos/build-pkg.sh [STAGE_DIR]  (default target/installer/macos)
# Environment: WARREN_MACOS_BIN_DIR (warren-desktop, warren, warrend built
# for macOS), WARREN_MACOS_SIGN_APP / WARREN_MACOS_SIGN_INSTALLER (signing
# identities, used on a Mac when set).
#
# The pkg installs (see README, macOS):
#   /Applications/Warren.app                        the app (warren-desktop)
#   /usr/local/bin/warren                           the CLI
#   /Library/PrivilegedHelperTools/warrend          the helper (root-owned dir)
#   /Library/LaunchDaemons/dev.warren.warrend.plist its LaunchDaemon
#   /Library/Application Support/Warren/uninstall.sh, /Library/Logs/Warren,
#   /etc/newsyslog.d/dev.warren.warrend.conf

set -euo pipefail
# Installer applies the payload's modes to directories that exist (a 0700
# /usr/local/bin from a strict umask would lock users out of it).
umask 022

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STAGE="${1:-$REPO/target/installer/macos}"
MARKER=.warren-macos-stage
BINARIES=(warren-desktop warren warrend)

say() { printf 'build-pkg: %s\n' "$*"; }
die() {
    printf 'build-pkg: error: %s\n' "$*" >&2
    exit 1
}

VERSION="$(awk '
    /^\[/ { section = $0 }
    section == "[workspace.package]" && $1 == "version" { gsub(/"/, "", $3); print $3; exit }
' "$REPO/Cargo.toml")"
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "no version under [workspace.package] in $REPO/Cargo.toml (found '$VERSION')"

# Only a directory this script made (or an empty one) is wiped.
if [ -e "$STAGE" ]; then
    if [ -f "$STAGE/$MARKER" ] || [ -z "$(ls -A "$STAGE")" ]; then
        rm -rf "$STAGE"
    else
        die "$STAGE exists and is not a stage this script made; remove it or pass another directory"
    fi
fi
ROOT="$STAGE/root"
APP="$ROOT/Applications/Warren.app/Contents"
mkdir -p "$STAGE/scripts" "$APP/MacOS" "$APP/Resources" \
    "$ROOT/Library/LaunchDaemons" "$ROOT/Library/PrivilegedHelperTools" \
    "$ROOT/Library/Logs/Warren" "$ROOT/Library/Application Support/Warren" \
    "$ROOT/usr/local/bin" "$ROOT/private/etc/newsyslog.d"
touch "$STAGE/$MARKER"
# The payload's directories carry macOS's own modes, in case Installer
# applies them to the directories that exist.
chmod 0775 "$ROOT/Applications"
chmod 1755 "$ROOT/Library/PrivilegedHelperTools"

# Where the darwin binaries come from, if anywhere.
BIN_DIR="${WARREN_MACOS_BIN_DIR:-}"
if [ -n "$BIN_DIR" ]; then
    for bin in "${BINARIES[@]}"; do
        [ -f "$BIN_DIR/$bin" ] || die "WARREN_MACOS_BIN_DIR=$BIN_DIR has no $bin; build all of ${BINARIES[*]} for macOS there"
    done
else
    fallback="${CARGO_TARGET_DIR:-$REPO/target}/x86_64-apple-darwin/release"
    BIN_DIR="$fallback"
    for bin in "${BINARIES[@]}"; do
        [ -f "$fallback/$bin" ] || BIN_DIR=""
    done
fi

# The architectures every binary contains (Installer asks for Rosetta when
# arm64 is missing); a file that is not Mach-O is a wrong build, not a pkg.
HOST_ARCHS=x86_64
if [ -n "$BIN_DIR" ]; then
    HOST_ARCHS="$(python3 - "${BINARIES[@]/#/$BIN_DIR/}" <<'PY'
import struct, sys
CPU = {0x01000007: "x86_64", 0x0100000C: "arm64"}
def archs(path):
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            sys.exit(f"{path} is not a Mach-O binary (too short); build it for macOS")
        magic = struct.unpack(">I", head[:4])[0]
        if magic in (0xCAFEBABE, 0xCAFEBABF):  # universal (fat) binary
            count = struct.unpack(">I", head[4:8])[0]
            size = 20 if magic == 0xCAFEBABE else 32
            found = set()
            for _ in range(count):
                entry = f.read(size)
                found.add(CPU.get(struct.unpack(">I", entry[:4])[0], "other"))
            return found
        if struct.unpack("<I", head[:4])[0] == 0xFEEDFACF:  # 64-bit, little-endian
            return {CPU.get(struct.unpack("<I", head[4:8])[0], "other")}
        sys.exit(f"{path} is not a 64-bit Mach-O binary; build it for macOS (x86_64-apple-darwin or aarch64-apple-darwin)")
common = None
for path in sys.argv[1:]:
    found = archs(path) & set(CPU.values())
    common = found if common is None else common & found
if not common:
    sys.exit("the binaries share no architecture macOS runs (x86_64, arm64); build them for the same target")
print(",".join(sorted(common)))
PY
)" || die "the binaries in $BIN_DIR are not usable macOS binaries"
    install -m 0755 "$BIN_DIR/warren-desktop" "$APP/MacOS/warren-desktop"
    install -m 0755 "$BIN_DIR/warren" "$ROOT/usr/local/bin/warren"
    install -m 0755 "$BIN_DIR/warrend" "$ROOT/Library/PrivilegedHelperTools/warrend"
    say "copied the macOS binaries from $BIN_DIR ($HOST_ARCHS)"
fi

sed "s/@VERSION@/$VERSION/g" "$HERE/Warren.app/Contents/Info.plist" >"$APP/Info.plist"
printf 'APPL????' >"$APP/PkgInfo"
# An .icns is a list of (type, length, PNG) entries; ic07 is 128x128 and
# ic09 512x512, which Finder scales for the other sizes.
python3 - "$REPO/src-tauri/icons/128x128.png" "$REPO/src-tauri/icons/icon.png" "$APP/Resources/Warren.icns" <<'PY' || die "could not make Warren.icns from src-tauri/icons"
import struct, sys
entries = b""
for kind, path in ((b"ic07", sys.argv[1]), (b"ic09", sys.argv[2])):
    data = open(path, "rb").read()
    if not data.startswith(b"\x89PNG"):
        sys.exit(f"{path} is not a PNG")
    entries += kind + struct.pack(">I", len(data) + 8) + data
open(sys.argv[3], "wb").write(b"icns" + struct.pack(">I", len(entries) + 8) + entries)
PY
install -m 0644 "$HERE/dev.warren.warrend.plist" "$ROOT/Library/LaunchDaemons/dev.warren.warrend.plist"
install -m 0755 "$HERE/uninstall.sh" "$ROOT/Library/Application Support/Warren/uninstall.sh"
install -m 0644 "$HERE/newsyslog-warrend.conf" "$ROOT/private/etc/newsyslog.d/dev.warren.warrend.conf"
install -m 0755 "$HERE/scripts/preinstall" "$HERE/scripts/postinstall" "$STAGE/scripts/"
install -m 0644 "$HERE/components.plist" "$STAGE/components.plist"
sed -e "s/@VERSION@/$VERSION/g" -e "s/@HOST_ARCHS@/$HOST_ARCHS/g" "$HERE/Distribution.xml" >"$STAGE/Distribution.xml"

# Lint what was staged: every plist parses, every script parses as sh.
PLISTS=("$APP/Info.plist" "$ROOT/Library/LaunchDaemons/dev.warren.warrend.plist" "$STAGE/components.plist")
python3 - "${PLISTS[@]}" <<'PY' || die "a staged plist does not parse"
import plistlib, sys
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        plistlib.load(f)
PY
python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' "$STAGE/Distribution.xml" ||
    die "Distribution.xml is not well-formed XML"
if command -v plutil >/dev/null 2>&1; then
    plutil -lint "${PLISTS[@]}" >/dev/null || die "plutil rejects a staged plist"
fi
for script in "$STAGE/scripts/preinstall" "$STAGE/scripts/postinstall" "$ROOT/Library/Application Support/Warren/uninstall.sh"; do
    sh -n "$script" || die "$script does not parse as sh"
done

COMPONENT="$STAGE/warren-component.pkg"
PRODUCT="$STAGE/Warren-$VERSION.pkg"
q() { printf '%q' "$1"; }
# What finishes the job on a Mac, printed when this machine can't.
mac_commands() {
    cat <<MSG
    # optional, for a package others can open: sign with hardened runtime
    codesign --force --options runtime --timestamp --sign "Developer ID Application: ..." $(q "$ROOT/usr/local/bin/warren") $(q "$ROOT/Library/PrivilegedHelperTools/warrend") $(q "$ROOT/Applications/Warren.app")
    pkgbuild --root $(q "$ROOT") --component-plist $(q "$STAGE/components.plist") --scripts $(q "$STAGE/scripts") --identifier dev.warren.pkg --version $VERSION --install-location / --ownership recommended $(q "$COMPONENT")
    productbuild --distribution $(q "$STAGE/Distribution.xml") --package-path $(q "$STAGE") --version $VERSION [--sign "Developer ID Installer: ..."] $(q "$PRODUCT")
    # signed only: xcrun notarytool submit $(q "$PRODUCT") --keychain-profile PROFILE --wait && xcrun stapler staple $(q "$PRODUCT")
MSG
}
say "staged the package (version $VERSION) in $STAGE"

if [ -z "$BIN_DIR" ]; then
    cat <<MSG
build-pkg: the macOS binaries are not here: linking for macOS needs Apple's SDK, so they are
build-pkg: built on a Mac. The staged tree has everything else. On a Mac, from the checkout:
    npm --prefix ui ci && npm --prefix ui run build
    cargo build --release --target x86_64-apple-darwin -p warren-desktop -p warren -p warrend
    installer/macos/build-pkg.sh    # stages again with the binaries and runs pkgbuild and productbuild
build-pkg: (WARREN_MACOS_SIGN_APP / WARREN_MACOS_SIGN_INSTALLER sign it), or by hand after staging there:
MSG
    mac_commands
    exit 0
fi

if ! command -v pkgbuild >/dev/null 2>&1 || ! command -v productbuild >/dev/null 2>&1; then
    say "pkgbuild and productbuild exist only on macOS; copy $STAGE to a Mac, to the same path, and run:"
    mac_commands
    exit 0
fi

if [ -n "${WARREN_MACOS_SIGN_APP:-}" ]; then
    # Hardened runtime and a timestamp: what notarization requires.
    for file in "$ROOT/usr/local/bin/warren" "$ROOT/Library/PrivilegedHelperTools/warrend" "$ROOT/Applications/Warren.app"; do
        codesign --force --options runtime --timestamp --sign "$WARREN_MACOS_SIGN_APP" "$file" ||
            die "codesign failed for $file; check WARREN_MACOS_SIGN_APP names a Developer ID Application identity"
    done
fi
pkgbuild --root "$ROOT" --component-plist "$STAGE/components.plist" --scripts "$STAGE/scripts" \
    --identifier dev.warren.pkg --version "$VERSION" --install-location / --ownership recommended \
    "$COMPONENT" || die "pkgbuild failed"
SIGN=()
if [ -n "${WARREN_MACOS_SIGN_INSTALLER:-}" ]; then
    SIGN=(--sign "$WARREN_MACOS_SIGN_INSTALLER")
fi
productbuild --distribution "$STAGE/Distribution.xml" --package-path "$STAGE" --version "$VERSION" \
    "${SIGN[@]}" "$PRODUCT" || die "productbuild failed"
say "built $PRODUCT"
if [ -z "${WARREN_MACOS_SIGN_INSTALLER:-}" ]; then
    say "it is unsigned: Gatekeeper will refuse it outside this Mac; set WARREN_MACOS_SIGN_APP and WARREN_MACOS_SIGN_INSTALLER, then notarize with 'xcrun notarytool submit $(q "$PRODUCT") --wait' and 'xcrun stapler staple $(q "$PRODUCT")'"
fi
