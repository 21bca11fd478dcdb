#!/usr/bin/env bash
# Supply-chain checks: `cargo deny check advisories licenses bans sources`
# with deny.toml over every Cargo workspace in the repository (the main one,
# the simulated-time tests and the fuzz targets), offline.
#
# The RustSec advisory database lives on a git host that CI and the
# developers' machines can't reach, so advisories are checked against a local
# copy made by scripts/update-advisories.sh. The first of these that exists
# is used:
#   1. $WARREN_ADVISORY_DB
#   2. the shared folder beside the checkout: ../shared/advisory-db
#   3. ${XDG_CACHE_HOME:-~/.cache}/warren/advisory-db (update-advisories.sh's default)
# cargo-deny wants its database to be a git checkout, so the copy is turned
# into one in a temporary directory for each run. With no copy, the other
# three checks still run and the run says loudly that advisories were not
# checked; WARREN_DENY_REQUIRE_ADVISORIES=1 makes that a failure.
#
# Duplicate-version warnings (many, through Tauri) are counted, not printed;
# the full report of each workspace is kept in $CARGO_TARGET_DIR/deny/.
#
# Usage: bash scripts/deny.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

# The version deny.toml is written for: config keys change between releases.
DENY_VERSION=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $DENY_VERSION" ]; then
    echo "installing cargo-deny $DENY_VERSION"
    env -u CARGO_TARGET_DIR cargo install cargo-deny --version "$DENY_VERSION" --locked
fi

LOG_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/deny"
mkdir -p "$LOG_DIR"

# cargo-deny derives the database's directory name from its URL
# (deny.toml's db-urls): <last path segment>-<xxhash64 of the URL>.
DB_DIR_NAME=advisory-db-3157b0e258782691

candidates=()
if [ -n "${WARREN_ADVISORY_DB:-}" ]; then candidates+=("$WARREN_ADVISORY_DB"); fi
candidates+=("$ROOT/../shared/advisory-db" "${XDG_CACHE_HOME:-$HOME/.cache}/warren/advisory-db")
db=""
for c in "${candidates[@]}"; do
    if [ -d "$c/crates" ]; then
        db="$(cd "$c" && pwd)"
        break
    fi
done
if [ -n "${WARREN_ADVISORY_DB:-}" ] && [ "$db" != "$(cd "$WARREN_ADVISORY_DB" 2>/dev/null && pwd)" ]; then
    echo "error: WARREN_ADVISORY_DB=$WARREN_ADVISORY_DB has no crates/ directory; point it at a copy made by scripts/update-advisories.sh" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Every lockfile-backed workspace; the fuzz workspace only once it exists.
manifests=(Cargo.toml crates/warren-tunnel/simtests/Cargo.toml)
if [ -f fuzz/Cargo.toml ]; then manifests+=(fuzz/Cargo.toml); fi

checks=(licenses bans sources)
if [ -n "$db" ]; then
    checks=(advisories "${checks[@]}")
    commit=$(sed -n 's/^commit = "\(.*\)"$/\1/p' "$db/SOURCE" 2>/dev/null || true)
    commit_date=$(sed -n 's/^commit_date = "\(.*\)"$/\1/p' "$db/SOURCE" 2>/dev/null || true)
    echo "advisory database: $db (RustSec commit ${commit:-unknown} of ${commit_date:-unknown date})"
    if [ -n "$commit_date" ]; then
        age_days=$((($(date +%s) - $(date -d "$commit_date" +%s)) / 86400))
        echo "advisory database age: ${age_days} days"
        if [ "$age_days" -gt 90 ]; then
            echo "warning: the advisory database is ${age_days} days old; refresh it with scripts/update-advisories.sh from a current advisory-db clone" >&2
        fi
    fi
    # A filtered copy only holds the crates named when it was made: say which
    # crates now in a lockfile it never looked for.
    if [ -f "$db/crates.txt" ] && [ "$(head -n1 "$db/crates.txt")" != "*" ]; then
        lock_files=()
        for m in "${manifests[@]}"; do
            lock="$(dirname "$m")/Cargo.lock"
            if [ -f "$lock" ]; then lock_files+=("$lock"); fi
        done
        uncovered=$(sed -n 's/^name = "\(.*\)"$/\1/p' "${lock_files[@]}" | sort -u | comm -23 - "$db/crates.txt")
        if [ -n "$uncovered" ]; then
            echo "warning: the advisory copy was filtered before these crates entered a lockfile, so their advisories are NOT checked; re-run scripts/update-advisories.sh:" >&2
            awk '{ print "  " $0 }' <<<"$uncovered" >&2
        fi
    fi
    mkdir -p "$tmp/$DB_DIR_NAME"
    cp -R "$db/." "$tmp/$DB_DIR_NAME/"
    # The commit carries the snapshot's own date, so `git log` in the copy
    # tells the truth about its age.
    (
        cd "$tmp/$DB_DIR_NAME"
        git init -q
        git add -A
        GIT_AUTHOR_DATE="${commit_date:-now}" GIT_COMMITTER_DATE="${commit_date:-now}" \
            git -c user.name=warren-deny -c user.email=deny@invalid -c commit.gpgsign=false \
            commit -q -m "RustSec advisory-db ${commit:-unknown}"
    )
    export WARREN_DENY_DB_ROOT="$tmp"
else
    echo "ADVISORIES NOT CHECKED: no advisory database copy found (looked in: ${candidates[*]})." >&2
    echo "  Make one with: scripts/update-advisories.sh PATH_TO_ADVISORY_DB_CLONE" >&2
    if [ "${WARREN_DENY_REQUIRE_ADVISORIES:-0}" = 1 ]; then
        exit 1
    fi
fi

failed=0
# Allowed licences and ignored advisories are per repository, not per
# workspace: an entry only one workspace needs is fine, one that none needs
# must go. Each workspace reports its unused entries (JSON, below) and the
# ones unused in all of them fail the run.
UNUSED_LINTS=(-A license-not-encountered -A advisory-not-detected)
unused_dir="$tmp/unused"
mkdir -p "$unused_dir"
runs=0
for m in "${manifests[@]}"; do
    dir=$(dirname "$m")
    if [ ! -f "$dir/Cargo.lock" ]; then
        echo "error: $dir has no Cargo.lock; run cargo generate-lockfile --manifest-path $m and commit it" >&2
        failed=1
        continue
    fi
    extra=()
    # The simulated-time tests are where boringtun's mock clock belongs;
    # deny.toml bans it everywhere else.
    if [ "$m" = crates/warren-tunnel/simtests/Cargo.toml ]; then extra=(--exclude mock_instant); fi
    if [ "$dir" = . ]; then name=main; else name=$(echo "$dir" | tr '/' '_'); fi
    log="$LOG_DIR/$name.log"
    echo "== cargo deny: $m (${checks[*]})"
    # Offline below: download what the lockfile names first, from the
    # registry (a no-op when the build already did).
    cargo fetch --locked --manifest-path "$m" --quiet
    start=$(date +%s)
    deny=(cargo deny --frozen --color never --manifest-path "$m" --config "$ROOT/deny.toml" "${extra[@]}")
    rc=0
    "${deny[@]}" check --hide-inclusion-graph --show-stats "${UNUSED_LINTS[@]}" "${checks[@]}" >"$log" 2>&1 || rc=$?
    # Every diagnostic but the duplicate-version warnings, then the totals.
    awk '/^(error|warning|bug|note|help)\[/ { show = ($0 !~ /^warning\[duplicate\]/) }
         /^ *(advisories|bans|licenses|sources) (ok|FAILED)/ { show = 1 }
         show' "$log"
    dups=$(grep -c '^warning\[duplicate\]' "$log" || true)
    echo "   ${dups} crates with several versions (warnings; full report: $log); $(($(date +%s) - start))s"
    if [ "$rc" -ne 0 ]; then
        echo "error: cargo deny failed for $m (exit $rc); see the diagnostics above" >&2
        failed=1
    fi
    # The unused entries of this workspace, one "code span" a line.
    unused_checks=(licenses)
    if [ -n "$db" ]; then unused_checks+=(advisories); fi
    "${deny[@]}" --format json check "${unused_checks[@]}" 2>&1 >/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        f = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if f.get("code") in ("license-not-encountered", "advisory-not-detected"):
        print(f["code"], f["labels"][0]["span"])
' | sort -u >"$unused_dir/$runs" || true # failures were reported by the run above
    runs=$((runs + 1))
done

if [ "$runs" -gt 0 ]; then
    unused=$(cat "$unused_dir"/* | sort | uniq -c | awk -v n="$runs" '$1 == n { print "  " $2 " " $3 }')
    if [ -n "$unused" ]; then
        echo "error: deny.toml has entries no workspace needs; remove them:" >&2
        echo "$unused" >&2
        failed=1
    fi
fi

if [ -z "$db" ]; then
    echo "warning: advisories were NOT checked (no advisory database copy); licenses, bans and sources were" >&2
fi
if [ "$failed" -eq 0 ]; then echo "cargo deny: all workspaces passed (${checks[*]})"; fi
exit "$failed"
