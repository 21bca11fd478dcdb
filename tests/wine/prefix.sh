# shellcheck shell=bash
# A Wine prefix in which Rust programs built for x86_64-pc-windows-gnu run:
# Wine 8 lacks bcryptprimitives.dll (ProcessPrng), which Rust's standard
# library loads at start-up, so a test-only stub (bcryptprimitives.c beside
# this file, over Wine's RtlGenRandom) is built and copied into system32.
#
# Use:
#   source tests/wine/prefix.sh
#   warren_wine_prefix [DIR]     # DIR defaults to $CARGO_TARGET_DIR/wine/prefix
#   "$WARREN_WINE" some.exe args # or wine64 directly: the variables are exported
# or, from any shell:  bash tests/wine/prefix.sh [DIR]   (prints DIR)
#
# On success it exports WINEPREFIX (absolute), WINEDEBUG=-all, WINELOADER and
# WARREN_WINE (the wine64 loader; Debian ships no 32-bit Wine here and the
# `wine` wrapper only adds a warning). The first call takes about half a
# minute (wineboot -i, bounded by WARREN_WINE_BOOT_TIMEOUT, default 300 s);
# later calls only check a marker and the stub and return at once. Concurrent
# callers are serialized with flock, so one prefix can be shared. The stub is
# built under the cargo target directory ($CARGO_TARGET_DIR, or target/ of
# this checkout), never in the source tree. Nothing here needs network
# access: Gecko and Mono are disabled, so wineboot never asks to download
# them.

warren_wine_prefix() {
    local here root target dir stub src wine64 sys32 marker
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    root="$(cd "$here/../.." && pwd)"
    target="${CARGO_TARGET_DIR:-$root/target}"
    dir="${1:-$target/wine/prefix}"
    src="$here/bcryptprimitives.c"
    stub="$target/wine/bcryptprimitives.dll"

    wine64="$(command -v wine64 || true)"
    [ -n "$wine64" ] || [ ! -x /usr/lib/wine/wine64 ] || wine64=/usr/lib/wine/wine64
    if [ -z "$wine64" ]; then
        echo "warren_wine_prefix: wine64 not found; install Debian's wine64 package (apt-get install wine64)" >&2
        return 1
    fi
    if ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
        echo "warren_wine_prefix: x86_64-w64-mingw32-gcc not found; install gcc-mingw-w64-x86-64" >&2
        return 1
    fi
    if ! command -v flock >/dev/null; then
        echo "warren_wine_prefix: flock not found; install util-linux" >&2
        return 1
    fi

    mkdir -p "$target/wine" "$(dirname "$dir")" || return 1
    dir="$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"
    export WINEPREFIX="$dir" WINEDEBUG=-all WINELOADER="$wine64" WARREN_WINE="$wine64"

    # One caller at a time builds the stub and boots the prefix; the others
    # wait and then find both ready.
    (
        flock -w 600 9 || { echo "warren_wine_prefix: timed out waiting for $dir.lock" >&2; exit 1; }

        if [ ! -f "$stub" ] || [ "$src" -nt "$stub" ]; then
            # The lock is per prefix, and callers with other prefixes share
            # the stub: build under a name of our own, then rename (atomic).
            x86_64-w64-mingw32-gcc -O2 -Wall -Wextra -shared -Wl,--kill-at \
                -o "$stub.$$.tmp" "$src" -ladvapi32 || exit 1
            mv -f "$stub.$$.tmp" "$stub" || exit 1
        fi

        marker="$dir/.warren-prefix-ready"
        if [ ! -f "$marker" ]; then
            # wineboot -i also completes a half-made prefix (one whose
            # wineboot the timeout killed); nothing here deletes a directory
            # the caller named.
            echo "warren_wine_prefix: creating Wine prefix $dir (wineboot -i, once)" >&2
            if ! WINEDLLOVERRIDES="mscoree,mshtml=" timeout --kill-after=10 \
                "${WARREN_WINE_BOOT_TIMEOUT:-300}" "$wine64" wineboot -i >/dev/null 2>&1; then
                echo "warren_wine_prefix: wineboot -i failed or timed out in $dir; run WINEPREFIX=$dir wine64 wineboot -i to see why" >&2
                exit 1
            fi
            # wineboot returns before the prefix's registry is on disk; the
            # server writes it when it exits.
            timeout 60 "$(dirname "$(readlink -f "$wine64")")/wineserver" -w 2>/dev/null || true
        fi

        sys32="$dir/drive_c/windows/system32"
        if [ ! -d "$sys32" ]; then
            echo "warren_wine_prefix: $sys32 missing after wineboot; delete $dir and retry" >&2
            exit 1
        fi
        if ! cmp -s "$stub" "$sys32/bcryptprimitives.dll"; then
            cp -f "$stub" "$sys32/bcryptprimitives.dll" || exit 1
        fi
        touch "$marker"
    ) 9>"$dir.lock"
}

# Run as a script: prepare the prefix and print its path.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    warren_wine_prefix "$@"
    echo "$WINEPREFIX"
fi
