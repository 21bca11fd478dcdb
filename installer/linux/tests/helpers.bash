# Shared setup for the Linux packaging tests (bats): where the built
# packages are, and a sandbox that runs a package script against mocks.
#
# The sandbox is a private mount namespace (unshare) with empty tmpfs over
# /etc, /var and /run, so a script's file changes (purge deletes
# /var/lib/warren, unit links under /etc/systemd/system) happen there and
# never on this machine; the commands it calls (systemctl, usermod, ...)
# are mocks that log their arguments. Needs root (unshare, mount).

REPO_ROOT="$(cd "$BATS_TEST_DIRNAME/../../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
PKG_DIR="$TARGET_DIR/installer"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -1)"
DEB="$PKG_DIR/warren_${VERSION}_amd64.deb"
DESKTOP_DEB="$PKG_DIR/warren-desktop_${VERSION}_amd64.deb"
RPM="$PKG_DIR/warren-${VERSION}-1.x86_64.rpm"
DESKTOP_RPM="$PKG_DIR/warren-desktop-${VERSION}-1.x86_64.rpm"

require_packages() {
    for f in "$DEB" "$DESKTOP_DEB" "$RPM" "$DESKTOP_RPM"; do
        if [ ! -f "$f" ]; then
            echo "missing $f: run \`bash installer/build.sh deb rpm\` first" >&2
            return 1
        fi
    done
}

# The package scripts as shipped: the deb's control scripts and the rpm's
# scriptlets, extracted from the built packages.
extract_scripts() {
    SCRIPTS="$BATS_FILE_TMPDIR/scripts"
    if [ -d "$SCRIPTS" ]; then
        return 0
    fi
    mkdir -p "$SCRIPTS/deb" "$SCRIPTS/rpm"
    dpkg-deb -e "$DEB" "$SCRIPTS/deb"
    rpm -qp --qf '%{POSTIN}' "$RPM" >"$SCRIPTS/rpm/post"
    rpm -qp --qf '%{PREUN}' "$RPM" >"$SCRIPTS/rpm/preun"
    rpm -qp --qf '%{POSTUN}' "$RPM" >"$SCRIPTS/rpm/postun"
}

# A fresh sandbox per test. State the mocks read:
#   $SANDBOX/passwd       name:x:uid:gid::: lines (getent passwd)
#   $SANDBOX/groups/USER  the user's groups (id -nG)
#   $SANDBOX/enabled      present: systemctl is-enabled says enabled
#   $SANDBOX/fail-usermod present: usermod fails
#   $SANDBOX/has-group    present: the warren group exists (getent group)
# and every call lands in $SANDBOX/calls, one line each.
make_sandbox() {
    SANDBOX="$BATS_TEST_TMPDIR/sandbox"
    mkdir -p "$SANDBOX/bin" "$SANDBOX/groups" "$SANDBOX/etc" "$SANDBOX/var" "$SANDBOX/run"
    : >"$SANDBOX/calls"
    : >"$SANDBOX/passwd"
    for cmd in systemctl systemd-sysusers usermod groupadd groupdel; do
        cat >"$SANDBOX/bin/$cmd" <<MOCK
#!/bin/sh
echo "$cmd \$*" >>"$SANDBOX/calls"
case "$cmd \$1" in
    "systemctl is-enabled") [ -e "$SANDBOX/enabled" ] ;;
    "usermod -aG") [ ! -e "$SANDBOX/fail-usermod" ] ;;
    *) exit 0 ;;
esac
MOCK
    done
    cat >"$SANDBOX/bin/getent" <<MOCK
#!/bin/sh
case "\$1" in
    passwd) grep -E "^\$2:|^[^:]*:[^:]*:\$2:" "$SANDBOX/passwd" ;;
    group) [ "\$2" = warren ] && [ -e "$SANDBOX/has-group" ] && echo "warren:x:999:" ;;
    *) exit 2 ;;
esac
MOCK
    cat >"$SANDBOX/bin/id" <<MOCK
#!/bin/sh
[ "\$1" = -nG ] && [ -f "$SANDBOX/groups/\$2" ] && cat "$SANDBOX/groups/\$2"
MOCK
    chmod +x "$SANDBOX/bin/"*
}

add_user() { # NAME UID GROUPS...
    local name="$1" uid="$2"
    shift 2
    echo "$name:x:$uid:$uid::/home/$name:/bin/sh" >>"$SANDBOX/passwd"
    echo "$name $*" >"$SANDBOX/groups/$name"
}

# run_script SYSTEMD(yes|no) SETUP SCRIPT ARGS...: runs SCRIPT in the
# sandbox. SETUP is shell run first inside it (to lay out /etc, /var).
# Sets $status and $output (bats `run`); the calls are in $SANDBOX/calls.
run_script() {
    local systemd="$1" prepare="$2" script="$3"
    shift 3
    local inner
    inner='set -e
mount -t tmpfs tmpfs /etc
mount -t tmpfs tmpfs /var
mount -t tmpfs tmpfs /run
if [ "$WARREN_TEST_SYSTEMD" = yes ]; then mkdir -p /run/systemd/system; fi
eval "$WARREN_TEST_PREPARE"
set +e
sh "$@"
code=$?
# What the script left, for the test to check.
find /etc /var /run \( -type f -o -type l \) -printf "%p\n" | sort >"$WARREN_TEST_FILES"
exit $code'
    run env -i PATH="$SANDBOX/bin:/usr/bin:/bin" \
        SUDO_USER="${SUDO_USER:-}" PKEXEC_UID="${PKEXEC_UID:-}" \
        WARREN_TEST_SYSTEMD="$systemd" WARREN_TEST_PREPARE="$prepare" \
        WARREN_TEST_FILES="$SANDBOX/files" \
        unshare --mount --propagation private sh -c "$inner" sandbox "$script" "$@"
}

calls() { cat "$SANDBOX/calls"; }

assert_called() { # LINE: the mock call happened (exact line)
    grep -qxF -- "$1" "$SANDBOX/calls" || {
        echo "expected call: $1"
        echo "calls were:"
        cat "$SANDBOX/calls"
        return 1
    }
}

assert_not_called() { # PATTERN (grep -E): no such call
    if grep -qE -- "$1" "$SANDBOX/calls"; then
        echo "unexpected call matching: $1"
        cat "$SANDBOX/calls"
        return 1
    fi
}
