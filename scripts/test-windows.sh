#!/usr/bin/env bash
# Runs the unit tests of the crates with Windows code as Windows programs:
# `cargo test --target x86_64-pc-windows-gnu` with Wine (tests/wine/runner.sh)
# as the target's runner, in one shared Wine prefix under the target
# directory. Called by scripts/test.sh; runs alone too:
#   bash scripts/test-windows.sh
# Respects CARGO_TARGET_DIR. WINDOWS_TEST_CRATES overrides the library list.
# At the end it prints which test binaries ran, how many tests passed in each,
# and every assertion a test skipped because Wine does not implement it (the
# tests print those lines with "under Wine").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TARGET=x86_64-pc-windows-gnu
CRATES="${WINDOWS_TEST_CRATES:-warren-ipc warren-netcfg warren-tunnel}"

for tool in x86_64-w64-mingw32-gcc timeout flock; do
    if ! command -v "$tool" >/dev/null; then
        echo "test-windows: $tool not found; install gcc-mingw-w64-x86-64 and coreutils/util-linux" >&2
        exit 1
    fi
done
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

# One prefix for every test binary (and for anyone else who sources
# prefix.sh with the default directory); made once, reused afterwards.
# shellcheck source=tests/wine/prefix.sh
source "$ROOT/tests/wine/prefix.sh"
warren_wine_prefix
echo "test-windows: Wine prefix $WINEPREFIX ($("$WARREN_WINE" --version 2>/dev/null || echo 'wine64'))"

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$ROOT/tests/wine/runner.sh"
export WARREN_WINE_PREFIX="$WINEPREFIX"

LOG="$CARGO_TARGET_DIR/wine/test-windows.log"
: >"$LOG"
start=$(date +%s)

failed=0
run() {
    echo "+ cargo test --target $TARGET $*" | tee -a "$LOG"
    cargo test --no-fail-fast --target "$TARGET" "$@" 2>&1 | tee -a "$LOG" || failed=1
}

# The libraries' unit and integration tests (doc tests are plain Rust and
# run natively in the main test step). --show-output: a passing test's
# "skipped under Wine" note is in its captured output, which libtest would
# otherwise drop.
# shellcheck disable=SC2086 # one -p per crate named in the list
run $(printf -- '-p %s ' $CRATES) --lib --tests -- --show-output
# warren-io: its UDP tests open quinn-udp's socket state, which turns on
# IP_RECVECN / IPV6_RECVECN; Wine 8's ws2_32 answers WSAENOPROTOOPT (10042),
# so UdpBatch::new fails before anything is sent. They run natively only.
echo "warren-io udp::tests skipped under Wine: quinn-udp needs IP_RECVECN/IPV6_RECVECN, which Wine 8 rejects (WSAENOPROTOOPT)" | tee -a "$LOG"
run -p warren-io --lib --tests -- --show-output --skip udp::tests::
# The helper's library and binary tests: the Windows service's control
# handler (helper/src/windows_service.rs) is a module of the binary.
run -p warrend --lib --bins -- --show-output

echo
echo "==== Windows tests under Wine: summary ($(($(date +%s) - start)) s) ===="
awk '
    /^     Running / {
        exe = $NF; gsub(/[()]/, "", exe); sub(/.*[\/]/, "", exe); sub(/-[0-9a-f]+\.exe$/, "", exe)
        bin = exe " (" (($2 == "unittests") ? $3 : $2) ")"
    }
    /^test result:/ && bin != "" { print "  " bin ": " $4 " passed, " $6 " failed, " $8 " ignored"; bin = "" }
' "$LOG"
echo "Tests that ran under Wine:"
grep -E '^test [^ ]+ \.\.\. ok$' "$LOG" | awk '{ print "  " $2 }' | sort -u
skips=$(grep -E 'under Wine' "$LOG" | grep -v '^test ' | sort -u || true)
if [ -n "$skips" ]; then
    echo "Assertions skipped because Wine lacks what real Windows has:"
    echo "$skips" | awk '{ print "  " $0 }'
fi
exit "$failed"
