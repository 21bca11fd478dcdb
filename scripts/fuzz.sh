#!/usr/bin/env bash
# Runs Warren's cargo-fuzz targets (fuzz/): scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Builds every target once, then runs each for SECONDS_PER_TARGET (default
# 60) on its working corpus (fuzz/corpus/TARGET, topped up from the
# committed seeds in fuzz/seeds/TARGET), with its dictionary if there is one.
# FUZZ_JOBS=N runs N targets at a time (default 1; each uses one core).
#
# Prints one JSON object per target on stdout: executions, executions per
# second, corpus size, coverage, RSS once warm and at the end (and the growth
# between them), and
# findings (crashes, timeouts over 10 s, out-of-memory, leaks), then a table
# on stderr. Exits 1 if any target found anything; the inputs are in
# fuzz/artifacts/TARGET/ and `cargo fuzz run TARGET FILE` replays one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

SECONDS_PER_TARGET=${1:-60}
shift || true
case "$SECONDS_PER_TARGET" in
    ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac
JOBS=${FUZZ_JOBS:-1}

ALL_TARGETS=$(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^warren-fuzz$' || true)
if [ $# -gt 0 ]; then
    TARGETS="$*"
    for t in $TARGETS; do
        grep -qx "$t" <<<"$ALL_TARGETS" || { echo "no fuzz target named $t; the targets are: $(tr "\n" " " <<<"$ALL_TARGETS")" >&2; exit 2; }
    done
else
    TARGETS=$ALL_TARGETS
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    env -u CARGO_TARGET_DIR cargo install cargo-fuzz --locked >&2
fi

# cargo-fuzz needs -Z flags; RUSTC_BOOTSTRAP=1 unlocks them on stable. The
# sanitizer build has its own target directory (fuzz/target).
cd "$ROOT/fuzz"
echo "building the fuzz targets (address sanitizer)" >&2
env -u CARGO_TARGET_DIR RUSTC_BOOTSTRAP=1 cargo fuzz build >&2
BIN="$ROOT/fuzz/target/x86_64-unknown-linux-gnu/release"
mkdir -p logs

run_one() {
    local t=$1
    local corpus="corpus/$t" artifacts="artifacts/$t/" log="logs/$t.log"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "seeds/$t" ]; then
        cp -n "seeds/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    local before
    before=$(find "$artifacts" -type f | wc -l)
    local dict=()
    [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
    local rc=0
    "$BIN/$t" "$corpus" "${dict[@]}" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts" -print_final_stats=1 -close_fd_mask=1 \
        >"$log" 2>&1 &
    local pid=$! waited=0 rss samples=()
    # RSS every 5 s. Address sanitizer's quarantine (256 MB) fills first, so
    # growth is measured from the sample at a fifth of the run to the last.
    # The loop is bounded: past its time plus two minutes the run is killed.
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$rss" ] && samples+=("$rss")
        sleep 5
        waited=$((waited + 5))
        if [ "$waited" -gt $((SECONDS_PER_TARGET + 120)) ]; then
            echo "$t: still running $waited s after its limit; killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    wait "$pid" || rc=$?
    local n=${#samples[@]} rss_warm=0 rss_end=0 growth=0
    if [ "$n" -gt 0 ]; then
        rss_warm=${samples[$((n / 5 > 2 ? n / 5 : (n > 2 ? 2 : n - 1)))]}
        rss_end=${samples[$((n - 1))]}
        [ "$rss_warm" -gt 0 ] && growth=$(( (rss_end - rss_warm) * 100 / rss_warm ))
    fi
    local after
    after=$(find "$artifacts" -type f | wc -l)
    local execs peak cov corpus_n
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    corpus_n=$(find "$corpus" -type f | wc -l)
    local crashes timeouts ooms leaks
    crashes=$(find "$artifacts" -type f -name 'crash-*' -newer "$log.start" | wc -l)
    timeouts=$(find "$artifacts" -type f -name 'timeout-*' -newer "$log.start" | wc -l)
    ooms=$(find "$artifacts" -type f -name 'oom-*' -newer "$log.start" | wc -l)
    leaks=$(find "$artifacts" -type f -name 'leak-*' -newer "$log.start" | wc -l)
    local findings=$((after - before))
    # A run that died without leaving an input (a harness bug, a signal) is
    # a finding too.
    if [ "$rc" -ne 0 ] && [ "$findings" -eq 0 ]; then findings=1; fi
    printf '{"target": "%s", "seconds": %s, "executions": %s, "exec_per_s": %s, "corpus": %s, "coverage": %s, "rss_warm_mb": %s, "rss_end_mb": %s, "rss_growth_pct": %s, "peak_rss_mb": %s, "crashes": %s, "timeouts": %s, "ooms": %s, "leaks": %s, "findings": %s, "exit": %s}\n' \
        "$t" "$SECONDS_PER_TARGET" "${execs:-0}" \
        "$(( ${execs:-0} / (SECONDS_PER_TARGET > 0 ? SECONDS_PER_TARGET : 1) ))" \
        "$corpus_n" "${cov:-0}" "$rss_warm" "$rss_end" "$growth" "${peak:-0}" \
        "$crashes" "$timeouts" "$ooms" "$leaks" "$findings" "$rc" >"logs/$t.json"
}

pids=()
for t in $TARGETS; do
    touch "logs/$t.log.start"
    echo "fuzzing $t for ${SECONDS_PER_TARGET}s (log: fuzz/logs/$t.log)" >&2
    run_one "$t" &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
done
wait "${pids[@]}" 2>/dev/null || true

failed=0
printf '%-16s %12s %8s %7s %6s %9s %8s\n' target executions exec/s corpus cov rss_mb findings >&2
for t in $TARGETS; do
    line=$(cat "logs/$t.json" 2>/dev/null || echo "{\"target\": \"$t\", \"findings\": 1, \"exit\": -1}")
    echo "$line"
    python3 - "$line" >&2 <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"{r['target']:<16} {r.get('executions', 0):>12} {r.get('exec_per_s', 0):>8} {r.get('corpus', 0):>7} "
      f"{r.get('coverage', 0):>6} {str(r.get('rss_warm_mb', 0)) + '→' + str(r.get('rss_end_mb', 0)):>9} {r['findings']:>8}")
PY
    if [ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["findings"])' "$line")" != 0 ]; then
        failed=1
        echo "  $t: see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2
    fi
done
exit $failed
