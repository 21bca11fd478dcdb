#!/usr/bin/env bash
# Cargo's runner for x86_64-pc-windows-gnu: runs a Windows test binary under
# wine64 in the shared test prefix (tests/wine/prefix.sh), bounded by
# WARREN_WINE_TEST_TIMEOUT seconds (default 600), with the binary's exit code
# passed through (124 when the timeout hit). Use:
#   CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=$PWD/tests/wine/runner.sh \
#       cargo test --target x86_64-pc-windows-gnu -p warren-ipc
# WARREN_WINE_PREFIX picks another prefix directory.
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: $0 PROGRAM.exe [ARGS...] (normally called by cargo as the target's runner)" >&2
    exit 2
fi

# shellcheck source=tests/wine/prefix.sh
source "$(dirname "${BASH_SOURCE[0]}")/prefix.sh"
warren_wine_prefix "${WARREN_WINE_PREFIX:-}"

set +e
timeout --kill-after=10 "${WARREN_WINE_TEST_TIMEOUT:-600}" "$WARREN_WINE" "$@"
rc=$?
set -e
if [ "$rc" -eq 124 ]; then
    echo "runner.sh: $1 did not finish within ${WARREN_WINE_TEST_TIMEOUT:-600} s under Wine; killed" >&2
fi
exit "$rc"
