#!/usr/bin/env bash
# Builds Warren's Windows installer on Linux:
#   target/installer/warren-<version>-x86_64.msi
# with wixl (Debian's msitools) from installer/windows/warren.wxs: the app,
# the CLI, the warrend service and wintun.dll beside it.
#
# Usage: bash installer/windows/build-msi.sh   (installer/build.sh msi calls it)
# PROFILE=release (default) or debug: which cargo build to package.
# WINTUN_DLL=path: use this wintun.dll instead of the pinned copy (below).
# CARGO_TARGET_DIR is honoured for the build and the output.
#
# wintun.dll is WireGuard LLC's signed amd64 build (0.14.1). The machines that
# build Warren reach only package registries, so it comes from the `wintun`
# crate on crates.io, which vendors the official release under
# wintun/bin/amd64/; both the crate and the DLL are pinned by sha256, and the
# DLL is cached under the target directory, never committed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WHO=installer/windows
# shellcheck source=installer/common.sh
. "$HERE/../common.sh"
STAGE="$OUT/stage-msi"
TRIPLE=x86_64-pc-windows-gnu
MSI="$OUT/warren-$VERSION-x86_64.msi"

WINTUN_CRATE=wintun
WINTUN_CRATE_VERSION=0.5.1
WINTUN_CRATE_SHA256=da99be64b5aa3de869c16977994314d0759a698d9a73ab0a5b1d52e2282033ae
WINTUN_DLL_SHA256=e5da8447dc2c320edc0fc52fa01885c103de8c118481f683643cacc3220dafce

need wixl "install it with: sudo apt-get install wixl msitools"
need x86_64-w64-mingw32-gcc "install it with: sudo apt-get install gcc-mingw-w64-x86-64"
need x86_64-w64-mingw32-strip "install it with: sudo apt-get install binutils-mingw-w64-x86-64"
rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE" ||
    die "the Rust target $TRIPLE is missing; add it with: rustup target add $TRIPLE"

profile_dirs "$TRIPLE"

# The wintun.dll to ship: WINTUN_DLL, or the pinned copy from the crate.
wintun_dll() {
    if [ -n "${WINTUN_DLL:-}" ]; then
        [ -f "$WINTUN_DLL" ] || die "WINTUN_DLL=$WINTUN_DLL does not exist"
        echo "$WINTUN_DLL"
        return
    fi
    local cache="$TARGET_DIR/wintun" dll crate
    dll="$cache/wintun-amd64.dll"
    if [ -f "$dll" ] && echo "$WINTUN_DLL_SHA256  $dll" | sha256sum -c --status; then
        echo "$dll"
        return
    fi
    mkdir -p "$cache"
    crate="$cache/$WINTUN_CRATE-$WINTUN_CRATE_VERSION.crate"
    echo "== fetching wintun.dll from the $WINTUN_CRATE $WINTUN_CRATE_VERSION crate (crates.io)" >&2
    if ! curl -fsSL --retry 3 --max-time 120 -o "$crate.tmp" \
        "https://static.crates.io/crates/$WINTUN_CRATE/$WINTUN_CRATE-$WINTUN_CRATE_VERSION.crate"; then
        # No direct download (no curl, or only cargo's own registry set-up
        # reaches crates.io): let cargo fetch it through a throwaway project.
        local project="$cache/fetch" registry
        mkdir -p "$project/src"
        printf '[package]\nname = "wintun-fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
            "$WINTUN_CRATE" "$WINTUN_CRATE_VERSION" >"$project/Cargo.toml"
        : >"$project/src/lib.rs"
        cargo fetch --manifest-path "$project/Cargo.toml" >&2 ||
            die "could not download the $WINTUN_CRATE crate; give a wintun.dll (amd64, from wintun.net) with WINTUN_DLL=path"
        registry="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
        cp "$(find "$registry" -name "$WINTUN_CRATE-$WINTUN_CRATE_VERSION.crate" | head -1)" "$crate.tmp" ||
            die "cargo fetched no $WINTUN_CRATE-$WINTUN_CRATE_VERSION.crate into $registry; give a wintun.dll with WINTUN_DLL=path"
    fi
    echo "$WINTUN_CRATE_SHA256  $crate.tmp" | sha256sum -c --status ||
        die "the $WINTUN_CRATE crate's checksum is not the pinned one; give a wintun.dll with WINTUN_DLL=path"
    mv -f "$crate.tmp" "$crate"
    tar -xzf "$crate" -O "$WINTUN_CRATE-$WINTUN_CRATE_VERSION/wintun/bin/amd64/wintun.dll" >"$dll.tmp" ||
        die "the $WINTUN_CRATE crate has no wintun/bin/amd64/wintun.dll"
    echo "$WINTUN_DLL_SHA256  $dll.tmp" | sha256sum -c --status ||
        die "the wintun.dll in the crate is not the pinned one; give a wintun.dll with WINTUN_DLL=path"
    mv -f "$dll.tmp" "$dll"
    echo "$dll"
}
WINTUN="$(wintun_dll)"
if command -v file >/dev/null 2>&1; then
    file -b "$WINTUN" | grep -q "PE32+ executable (DLL).*x86-64" ||
        die "$WINTUN is not an x86-64 Windows DLL ($(file -b "$WINTUN"))"
fi

# The app embeds the built UI.
if [ ! -f "$ROOT/ui/dist/index.html" ]; then
    echo "== building the UI (ui/dist)"
    npm --prefix "$ROOT/ui" ci --no-audit --no-fund
    npm --prefix "$ROOT/ui" run build
fi
echo "== cargo build --target $TRIPLE ($PROFILE): warrend, warren, warren-desktop"
(cd "$ROOT" && cargo build "${cargo_profile[@]}" --target "$TRIPLE" -p warrend -p warren -p warren-desktop)

# wixl resolves each Source relative to the .wxs, so stage the files beside
# a copy of it.
rm -rf "$STAGE"
mkdir -p "$STAGE"
# The workspace's profiles keep debug info (line tables in release), which
# makes the programs five times larger; the installed copies go without.
for exe in warrend warren warren-desktop; do
    cp "$bin_dir/$exe.exe" "$STAGE/$exe.exe"
    x86_64-w64-mingw32-strip --strip-debug "$STAGE/$exe.exe"
done
cp "$WINTUN" "$STAGE/wintun.dll"
cp "$HERE/warren.wxs" "$STAGE/warren.wxs"

echo "== wixl: $MSI"
rm -f "$MSI"
(cd "$STAGE" && wixl --arch x64 --define "Version=$VERSION" --output "$MSI" warren.wxs)
[ -s "$MSI" ] || die "wixl wrote no $MSI"
echo "$MSI"
