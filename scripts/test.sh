#!/usr/bin/env bash
# The Warren test command: installs what the tests need, then runs formatting,
# lints (native and cross), the build, the installers (built, linted, their
# scripts run against mocks, the .deb booted in a container, the MSI installed
# under Wine), every test (end-to-end included), the Windows unit tests under
# Wine, a 2-minute chaos soak, the supply-chain checks and a bounded fuzz run of
# every target. Fails fast; each step prints a banner so a failure is easy
# to place. Usage: bash scripts/test.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

# Crates that must also lint clean for the other desktop OSes. The helper,
# the CLI, the tunnel and the desktop app also build for Windows (ring's C
# code needs the MinGW compiler); for macOS they would need Apple's SDK,
# which Debian lacks.
CROSS_CRATES="${CROSS_CRATES:-warren-ipc warren-netcfg warren-dns}"
WINDOWS_CRATES="${WINDOWS_CRATES:-warren-tunnel warren-io warrend warren warren-desktop}"
CROSS_TARGETS="x86_64-pc-windows-gnu x86_64-apple-darwin"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"

START=$(date +%s)
step() {
    local now
    now=$(date +%s)
    printf '\n==== [%4ss] %s ====\n' "$((now - START))" "$*"
}

# One target directory for every cargo invocation here (the simulated-time
# workspace included) and no incremental caches: a CI machine's disk may be
# small, and incremental data only pays off across edits, never in one run.
export CARGO_INCREMENTAL=0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# Needed free space, roughly: the build with its tests, the cross lints and
# the fuzz builds. Say so at once rather than failing mid-build on ENOSPC.
NEED_MB=12000
free_mb=$(df -Pm "$ROOT" | awk 'NR == 2 { print $4 }')
echo "free disk at $ROOT: ${free_mb} MiB (the run needs about ${NEED_MB} MiB)"
if [ "${free_mb:-0}" -lt "$NEED_MB" ]; then
    echo "warning: less free disk than a full run needs; free some space (cargo clean in other checkouts) if it fails with 'No space left on device'" >&2
fi

step "system packages"
# Commands the end-to-end tests use: ip (iproute2), useradd/groupadd
# (passwd), ps/pgrep (procps), setpriv/runuser (util-linux); wireguard-go and
# wg as an independent WireGuard peer; iperf3 for the tunnel benchmark;
# dnsmasq and dig as the DNS tests' original resolver and client, dnsperf
# for the DNS benchmark.
declare -A PKG_FOR=(
    [ip]=iproute2
    [useradd]=passwd
    [groupadd]=passwd
    [userdel]=passwd
    [usermod]=passwd
    [groupdel]=passwd
    [getent]=libc-bin
    [ps]=procps
    [setpriv]=util-linux
    [runuser]=util-linux
    [curl]=curl
    [openssl]=openssl
    [python3]=python3
    [wireguard-go]=wireguard-go
    [wg]=wireguard-tools
    [iperf3]=iperf3
    [x86_64-w64-mingw32-gcc]=gcc-mingw-w64-x86-64
    [dnsmasq]=dnsmasq-base
    [dig]=dnsutils
    [dnsperf]=dnsperf
    # The desktop app: a virtual X display, a session bus, WebKit's WebDriver
    # for the real-app test (screenshots with ImageMagick's import, the
    # clipboard read with xclip) and Chromium for the UI's browser tests.
    [Xvfb]=xvfb
    [dbus-daemon]=dbus
    [WebKitWebDriver]=webkit2gtk-driver
    [chromium]=chromium
    [xclip]=xclip
    [import]=imagemagick
    # The NAT lab's routers: nftables for masquerade, conntrack to forget
    # mappings when a test changes a router's behaviour.
    [nft]=nftables
    [conntrack]=conntrack
    # A real TURN relay (and its test client) for the path layer's tests.
    [turnserver]=coturn
    [turnutils_uclient]=coturn
    # A real Secret Service for the keyring test.
    [gnome-keyring-daemon]=gnome-keyring
    [secret-tool]=libsecret-tools
    [node]=nodejs
    [npm]=npm
    # The installers (installer/build.sh) and their checks: dpkg-deb with
    # dpkg-shlibdeps, rpmbuild, lintian, rpmlint, desktop-file-validate,
    # shellcheck and bats for the package scripts, file; debootstrap and
    # systemd-nspawn boot the .deb in a Debian container; wixl builds the
    # MSI and Wine installs it and runs the Windows unit tests.
    [dpkg-shlibdeps]=dpkg-dev
    [rpmbuild]=rpm
    [lintian]=lintian
    [rpmlint]=rpmlint
    [desktop-file-validate]=desktop-file-utils
    [shellcheck]=shellcheck
    [bats]=bats
    [file]=file
    [debootstrap]=debootstrap
    [systemd-nspawn]=systemd-container
    [wixl]=wixl
    [msiinfo]=msitools
    [wine]=wine
)
# Libraries Tauri builds against (no command to probe for, so by package).
DEV_PACKAGES="libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev libssl-dev"
# Wine's 64-bit loader has no command on PATH of its own.
DEV_PACKAGES="$DEV_PACKAGES wine64"
missing=()
for cmd in "${!PKG_FOR[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ] && ! [ -x "/sbin/$cmd" ]; then
        missing+=("${PKG_FOR[$cmd]}")
    fi
done
for pkg in $DEV_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    # Deduplicate: several commands come from one package.
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing ${missing[*]} and not root; install them with apt-get and re-run" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "all present"
fi

step "rust targets for cross lints"
# shellcheck disable=SC2086
rustup target add $CROSS_TARGETS

if ! command -v tauri-driver >/dev/null 2>&1; then
    step "cargo install tauri-driver (WebDriver for the real-app test)"
    env -u CARGO_TARGET_DIR cargo install tauri-driver --version "^2" --locked
fi

# The app embeds the built UI, so the UI comes before any cargo build.
step "ui: npm ci, type check and build"
npm --prefix ui ci --no-audit --no-fund
npm --prefix ui run build

step "tests/oidc: npm ci (the test OpenID Provider and browser driver of the sign-in tests)"
npm --prefix tests/oidc ci --no-audit --no-fund

step "ui: vitest"
npm --prefix ui test

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "supply chain: cargo deny check advisories licenses bans sources (scripts/deny.sh)"
# Installs cargo-deny when missing; advisories need the offline copy that
# scripts/update-advisories.sh makes, and the step says so when it is absent.
bash scripts/deny.sh

for target in $CROSS_TARGETS; do
    for crate in $CROSS_CRATES; do
        step "cargo clippy -p $crate --all-targets --target $target -- -D warnings"
        cargo clippy -p "$crate" --all-targets --target "$target" -- -D warnings
    done
done
step "cargo clippy (${WINDOWS_CRATES}) --all-targets --target x86_64-pc-windows-gnu -- -D warnings"
# shellcheck disable=SC2046
cargo clippy $(printf -- '-p %s ' $WINDOWS_CRATES) --all-targets --target x86_64-pc-windows-gnu -- -D warnings

step "cargo build --workspace --bins"
cargo build --workspace --bins

step "installers: bash installer/build.sh deb rpm msi pkg (PROFILE=debug: the build above)"
# The tests below install, boot and lint these packages.
PROFILE=debug bash installer/build.sh deb rpm msi pkg

step "installers: package scripts against mocks and lint checks (bats installer/linux/tests)"
bats installer/linux/tests

step "cargo test --workspace"
# Every test binary runs even after a failure, so one run shows them all.
cargo test --workspace --no-fail-fast

step "Windows unit tests under Wine (scripts/test-windows.sh)"
bash scripts/test-windows.sh

step "ui: Playwright in Chromium with mocked Tauri IPC"
npm --prefix ui run e2e

step "chaos soak, 2-minute version (bench/run soak's binary from the debug build above, WARREN_SOAK_SECS=120)"
# Kills of the helper, an agent and the coordinator, link loss and delay, a
# frozen helper and admin bursts among 20 agents with traffic; fails on any
# broken invariant (status vs the coordinator, restored DNS and routes, no
# leftover TUN, flat helper memory and descriptors). Run directly: a
# `cargo build -p …` of a subset could rebuild dependencies with other
# features.
WARREN_SOAK_SECS=120 "$CARGO_TARGET_DIR/debug/soak"

step "warren-tunnel simulated-time tests (own workspace: boringtun with its mock clock)"
# Kept out of the main workspace so the mock clock can never reach a real binary.
cargo test --manifest-path crates/warren-tunnel/simtests/Cargo.toml

# Every decoder that takes bytes from outside, briefly: FUZZ_SECONDS per
# target, two at a time. The long runs are `scripts/fuzz.sh 1800`.
step "fuzz: every target for ${FUZZ_SECONDS}s (scripts/fuzz.sh)"
FUZZ_JOBS=2 bash scripts/fuzz.sh "$FUZZ_SECONDS"

step "disk used by the build"
du -sh "$ROOT/target" "$ROOT/fuzz/target" 2>/dev/null || true
df -h "$ROOT" | tail -1

step "all passed in $(($(date +%s) - START))s"
