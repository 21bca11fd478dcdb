#!/usr/bin/env bash
# Makes the offline advisory database that scripts/deny.sh checks against: a
# filtered copy of a RustSec advisory-db git repository (bare or not) holding
# the advisories of every crate name in any of this repository's Cargo.lock
# files, plus a SOURCE file naming the commit and its date and a crates.txt
# naming the crates it was filtered for (deny.sh warns when a lockfile gains
# a crate that list lacks, so a stale filter can't pass silently).
#
# Why a copy: CI and the developers' machines reach the package registries
# only, not the database's own git host, so cargo-deny can't fetch it there.
# The copy is data from another project and is not committed here; put it
# where deny.sh looks (see there), for example the shared folder beside the
# checkout, or pass its path in WARREN_ADVISORY_DB.
#
# Usage: scripts/update-advisories.sh ADVISORY_DB_GIT_DIR [OUTPUT_DIR]
#   OUTPUT_DIR defaults to ${XDG_CACHE_HOME:-~/.cache}/warren/advisory-db.
#   WARREN_ADVISORY_ALL=1 copies every advisory instead of filtering.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 ADVISORY_DB_GIT_DIR [OUTPUT_DIR]" >&2
    echo "  ADVISORY_DB_GIT_DIR: a clone (or bare copy) of the RustSec advisory-db repository" >&2
    exit 2
fi
SRC="$1"
OUT="${2:-${XDG_CACHE_HOME:-$HOME/.cache}/warren/advisory-db}"

if ! commit=$(git -C "$SRC" rev-parse --verify 'HEAD^{commit}' 2>/dev/null); then
    echo "error: $SRC is not a git repository with a HEAD commit; pass a clone of the RustSec advisory-db" >&2
    exit 1
fi
if ! git -C "$SRC" cat-file -e "$commit:crates" 2>/dev/null; then
    echo "error: $SRC has no crates/ directory at HEAD; is it the RustSec advisory-db?" >&2
    exit 1
fi
commit_date=$(git -C "$SRC" show -s --format=%cI "$commit")

# Every crate name in every lockfile of the repository (the main workspace,
# the simulated-time tests, the fuzz workspace, and any added later).
mapfile -t lockfiles < <(find "$ROOT" -name Cargo.lock -not -path '*/target/*' -not -path '*/node_modules/*' | sort)
crates_list=$(mktemp)
trap 'rm -f "$crates_list"' EXIT
sed -n 's/^name = "\(.*\)"$/\1/p' "${lockfiles[@]}" | sort -u >"$crates_list"

# Build the new copy beside the old one and swap at the end, so an
# interrupted run leaves the previous copy whole.
mkdir -p "$(dirname "$OUT")"
tmp=$(mktemp -d "$OUT.new.XXXXXX")
mkdir -p "$tmp/crates"
copied=0
while IFS= read -r path; do
    name=${path#crates/}
    name=${name%%/*}
    if [ "${WARREN_ADVISORY_ALL:-0}" != 1 ] && ! grep -qxF "$name" "$crates_list"; then
        continue
    fi
    mkdir -p "$tmp/$(dirname "$path")"
    git -C "$SRC" show "$commit:$path" >"$tmp/$path"
    copied=$((copied + 1))
done < <(git -C "$SRC" ls-tree -r --name-only "$commit" crates | grep '\.md$')
# The database's licence (CC0-1.0) travels with its data.
git -C "$SRC" show "$commit:LICENSE.txt" >"$tmp/LICENSE.txt" 2>/dev/null || true

if [ "${WARREN_ADVISORY_ALL:-0}" = 1 ]; then
    echo "*" >"$tmp/crates.txt"
else
    cp "$crates_list" "$tmp/crates.txt"
fi
cat >"$tmp/SOURCE" <<EOF
# A filtered copy of the RustSec advisory database, made by scripts/update-advisories.sh.
source = "https://github.com/rustsec/advisory-db"
commit = "$commit"
commit_date = "$commit_date"
made = "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
advisories = $copied
lockfiles = "$(printf '%s ' "${lockfiles[@]#"$ROOT"/}" | sed 's/ $//')"
EOF

rm -rf "$OUT.old"
if [ -e "$OUT" ]; then mv "$OUT" "$OUT.old"; fi
mv "$tmp" "$OUT"
rm -rf "$OUT.old"
echo "advisory database: $copied advisories for $(wc -l <"$crates_list") crate names from commit $commit ($commit_date) in $OUT"
