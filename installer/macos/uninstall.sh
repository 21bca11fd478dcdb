#!/bin/sh
# Removes Warren from this Mac: stops the helper (on SIGTERM it undoes its
# routes and /etc/resolver files), then removes its LaunchDaemon, the
# helper, the CLI, the app, the `warren` group, the helper's logs and state
# and the package receipt. Each person's own data (the app's settings in
# ~/Library, the sign-in token in the keychain, a "start on login" agent in
# ~/Library/LaunchAgents) stays.
#
# The package installs it as /Library/Application Support/Warren/uninstall.sh:
#   sudo "/Library/Application Support/Warren/uninstall.sh"
# An optional argument names the volume Warren is on (default "/"); it is
# there so the script can be tried against a scratch tree, and launchctl
# speaks to the running system whatever it is.

set -u
PATH="$PATH:/bin:/sbin:/usr/bin:/usr/sbin"

LABEL=dev.warren.warrend
GROUP=warren
PKG_ID=dev.warren.pkg

say() { printf 'warren uninstall: %s\n' "$*"; }
fail() {
    printf 'warren uninstall: error: %s\n' "$*" >&2
    exit 1
}
loaded() { launchctl print "system/$LABEL" >/dev/null 2>&1; }

ROOT="${1:-/}"
case "$ROOT" in
    /*) ;;
    *) fail "the volume must be an absolute path, not '$ROOT'" ;;
esac
ROOT="${ROOT%/}"
PLIST="$ROOT/Library/LaunchDaemons/$LABEL.plist"
STATE="$ROOT/Library/Application Support/Warren"
JOURNAL="$STATE/netstate.json"

[ "$(id -u)" = 0 ] || fail "run it as root: sudo \"$0\""

# The helper first, and only while it can still undo its own changes: files
# are removed only once it is gone.
if loaded; then
    say "stopping the Warren helper (it undoes its network changes)"
    if ! launchctl bootout "system/$LABEL"; then
        launchctl unload "$PLIST" || true
    fi
    if loaded; then
        fail "the Warren helper could not be stopped; run 'sudo launchctl bootout system/$LABEL' and run this again"
    fi
else
    say "the Warren helper is not loaded"
fi

# The helper deletes its journal once everything in it is undone; a journal
# still here means it was killed mid-way. Its routes and addresses went with
# its utun device; the /etc/resolver files it names would keep sending
# names to a stub that is gone, so they go (only files in /etc/resolver).
if [ -f "$JOURNAL" ]; then
    say "the helper left changes in $JOURNAL; removing the resolver files it names"
    sed -n 's|^.*"path": *"\(/etc/resolver/[^"/]*\)".*$|\1|p' "$JOURNAL" | while IFS= read -r file; do
        if [ -f "$ROOT$file" ]; then
            rm -f "$ROOT$file" && say "removed $file"
        fi
    done
fi

rm -f "$PLIST" \
    "$ROOT/Library/PrivilegedHelperTools/warrend" \
    "$ROOT/usr/local/bin/warren" \
    "$ROOT/private/etc/newsyslog.d/$LABEL.conf" || fail "could not remove Warren's files"
rm -rf "$ROOT/Applications/Warren.app" \
    "$ROOT/Library/Logs/Warren" \
    "$ROOT/var/run/warren" \
    "$STATE" || fail "could not remove Warren's directories"
say "removed the app, the CLI, the helper, its LaunchDaemon, logs and state"

if dseditgroup -o read "$GROUP" >/dev/null 2>&1; then
    if dseditgroup -o delete "$GROUP"; then
        say "removed group $GROUP"
    else
        say "warning: could not remove group $GROUP; run 'sudo dseditgroup -o delete $GROUP'"
    fi
fi

if pkgutil --pkg-info "$PKG_ID" >/dev/null 2>&1; then
    pkgutil --forget "$PKG_ID" >/dev/null || say "warning: could not forget the receipt $PKG_ID; run 'sudo pkgutil --forget $PKG_ID'"
fi

say "Warren is removed"
exit 0
