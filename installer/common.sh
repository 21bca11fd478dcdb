# shellcheck shell=bash disable=SC2034
# (SC2034: the variables are for the scripts that source this file.)
# What every installer build script shares (sourced, not run): where the
# workspace and the outputs are, the version, which cargo profile to
# package, and the error helpers. The sourcing script sets WHO first (its
# name in error messages).
#
# Sets: ROOT, PROFILE, TARGET_DIR, OUT, VERSION; die, need, profile_dirs.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE="${PROFILE:-release}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET_DIR/installer"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"

die() { echo "${WHO:-installer}: error: $*" >&2; exit 1; }
# need COMMAND HOW: HOW says how to install it.
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is missing; $2"; }

[ -n "$VERSION" ] || die "no version in $ROOT/Cargo.toml"

# profile_dirs [TRIPLE]: cargo's flags for PROFILE (cargo_profile) and where
# its binaries land (bin_dir), for the host or a target triple.
profile_dirs() {
    local base="$TARGET_DIR${1:+/$1}"
    case "$PROFILE" in
        release) cargo_profile=(--release); bin_dir="$base/release" ;;
        debug) cargo_profile=(); bin_dir="$base/debug" ;;
        *) die "PROFILE must be release or debug, not '$PROFILE'" ;;
    esac
}
