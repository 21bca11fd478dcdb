# Shared steps of Warren's package scripts (deb maintainer scripts and rpm
# scriptlets). installer/linux/build.sh pastes this file where a script says
# "#WARREN_LIB#", so each script stays self-contained as packaging requires.
# POSIX sh: dash on Debian, bash on rpm systems.

WARREN_GROUP=warren
WARREN_UNIT=warrend.service

# Only a booted systemd can start or restart units; in a chroot, an image
# build or a container without systemd, the unit is only enabled so it
# starts at the next boot.
warren_systemd_running() {
    [ -d /run/systemd/system ]
}

warren_create_group() {
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers warren.conf
    elif ! getent group "$WARREN_GROUP" >/dev/null 2>&1; then
        groupadd --system "$WARREN_GROUP"
    fi
}

# The person who ran the installer (sudo apt install, or a graphical
# installer through pkexec), or nothing on a headless install.
warren_installing_user() {
    if [ -n "${SUDO_USER:-}" ] && [ "${SUDO_USER}" != root ]; then
        printf '%s\n' "$SUDO_USER"
    elif [ -n "${PKEXEC_UID:-}" ] && [ "${PKEXEC_UID}" != 0 ]; then
        getent passwd "$PKEXEC_UID" | cut -d: -f1
    fi
}

# Lets the installing user use the helper. Never fails the install: a
# machine without such a user (a server, an image build) is normal.
warren_add_installing_user() {
    user=$(warren_installing_user || true)
    if [ -z "$user" ] || ! getent passwd "$user" >/dev/null 2>&1; then
        echo "Warren: to let someone use Warren, add them to the group '$WARREN_GROUP': sudo usermod -aG $WARREN_GROUP USER (it counts from their next login)."
        return 0
    fi
    if id -nG "$user" 2>/dev/null | tr ' ' '\n' | grep -qx "$WARREN_GROUP"; then
        return 0
    fi
    if usermod -aG "$WARREN_GROUP" "$user"; then
        echo "Warren: added $user to the group '$WARREN_GROUP'. Log out and back in (a new login) before using Warren."
    else
        echo "Warren: could not add $user to the group '$WARREN_GROUP'; run: sudo usermod -aG $WARREN_GROUP $user" >&2
    fi
    return 0
}

# First install: start at every boot, and now if systemd runs.
warren_enable_and_start() {
    if ! command -v systemctl >/dev/null 2>&1; then
        return 0
    fi
    if warren_systemd_running; then
        systemctl daemon-reload || true
        systemctl enable --now "$WARREN_UNIT" || echo "Warren: the helper did not start; see: journalctl -u warrend" >&2
    else
        systemctl enable "$WARREN_UNIT" || true
    fi
}

# Upgrade (or reinstall after a removal): the new binary takes over. An
# enabled helper runs again; one the administrator disabled is restarted
# only if it was running. Enablement stays the administrator's choice.
warren_restart_after_upgrade() {
    if warren_systemd_running && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload || true
        if systemctl is-enabled --quiet "$WARREN_UNIT" 2>/dev/null; then
            systemctl restart "$WARREN_UNIT" || echo "Warren: the helper did not restart; see: journalctl -u warrend" >&2
        else
            systemctl try-restart "$WARREN_UNIT" || true
        fi
    fi
}

# Removal: the helper undoes its routes and DNS settings when it stops.
warren_stop() {
    if warren_systemd_running && command -v systemctl >/dev/null 2>&1; then
        systemctl stop "$WARREN_UNIT" || true
    fi
}

# After the files are gone: nothing of Warren is left. Unit links are
# removed by hand because the unit file they point to no longer exists.
warren_purge() {
    rm -f /etc/systemd/system/*.wants/"$WARREN_UNIT"
    if [ -L "/etc/systemd/system/$WARREN_UNIT" ] &&
        [ "$(readlink "/etc/systemd/system/$WARREN_UNIT")" = /dev/null ]; then
        rm -f "/etc/systemd/system/$WARREN_UNIT"
    fi
    rm -rf /var/lib/warren /var/log/warren /run/warren /etc/warren
    if getent group "$WARREN_GROUP" >/dev/null 2>&1; then
        groupdel "$WARREN_GROUP" || echo "Warren: could not remove the group '$WARREN_GROUP'; remove it with: sudo groupdel $WARREN_GROUP" >&2
    fi
    if warren_systemd_running && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload || true
        systemctl reset-failed "$WARREN_UNIT" 2>/dev/null || true
    fi
}
