#!/usr/bin/env bats
# The package scripts of the `warren` deb and rpm, run against mocks for
# every path: install with and without a user (sudo, pkexec, none, one
# that can't be added), with and without a running systemd, upgrade,
# remove and purge. See helpers.bash for the sandbox.

load helpers

setup_file() {
    require_packages
}

setup() {
    extract_scripts
    make_sandbox
}

UNIT_LINKS='mkdir -p /etc/systemd/system/multi-user.target.wants /var/lib/warren /var/log/warren /etc/warren
ln -s /usr/lib/systemd/system/warrend.service /etc/systemd/system/multi-user.target.wants/warrend.service
echo "{}" >/var/lib/warren/netstate.json
echo "log" >/var/log/warren/warrend.log
echo "ranges" >/etc/warren/policy.toml'

# --- deb: postinst ---------------------------------------------------------

@test "deb install by sudo: group, user added with a re-login notice, unit enabled and started" {
    add_user alice 1000 alice
    SUDO_USER=alice run_script yes "" "$SCRIPTS/deb/postinst" configure ""
    [ "$status" -eq 0 ]
    assert_called "systemd-sysusers warren.conf"
    assert_called "usermod -aG warren alice"
    assert_called "systemctl enable --now warrend.service"
    [[ "$output" == *"added alice to the group 'warren'"* ]]
    [[ "$output" == *"Log out and back in"* ]]
}

@test "deb install through pkexec: the user is found by uid" {
    add_user bob 1001 bob
    PKEXEC_UID=1001 run_script yes "" "$SCRIPTS/deb/postinst" configure ""
    [ "$status" -eq 0 ]
    assert_called "usermod -aG warren bob"
}

@test "deb install with no user (headless): succeeds and says how to add one" {
    run_script yes "" "$SCRIPTS/deb/postinst" configure ""
    [ "$status" -eq 0 ]
    assert_not_called "^usermod"
    assert_called "systemctl enable --now warrend.service"
    [[ "$output" == *"sudo usermod -aG warren USER"* ]]
}

@test "deb install by root through sudo, or by an unknown user: nobody is added, install succeeds" {
    SUDO_USER=root run_script yes "" "$SCRIPTS/deb/postinst" configure ""
    [ "$status" -eq 0 ]
    assert_not_called "^usermod"
    SUDO_USER=ghost run_script yes "" "$SCRIPTS/deb/postinst" configure ""
    [ "$status" -eq 0 ]
    assert_not_called "^usermod"
}

@test "deb install: a user already in the group is left alone" {
    add_user carol 1002 carol warren
    SUDO_USER=carol run_script yes "" "$SCRIPTS/deb/postinst" configure ""
    [ "$status" -eq 0 ]
    assert_not_called "^usermod"
}

@test "deb install: a failing usermod warns but never fails the install" {
    add_user dave 1003 dave
    touch "$SANDBOX/fail-usermod"
    SUDO_USER=dave run_script yes "" "$SCRIPTS/deb/postinst" configure ""
    [ "$status" -eq 0 ]
    assert_called "usermod -aG warren dave"
    [[ "$output" == *"sudo usermod -aG warren dave"* ]]
}

@test "deb install without a running systemd (chroot, image build): enabled for the next boot, not started" {
    run_script no "" "$SCRIPTS/deb/postinst" configure ""
    [ "$status" -eq 0 ]
    assert_called "systemctl enable warrend.service"
    assert_not_called "^systemctl (start|restart|daemon-reload|enable --now)"
}

@test "deb upgrade of an enabled helper: restarted, enablement untouched, nobody added" {
    add_user alice 1000 alice
    touch "$SANDBOX/enabled"
    SUDO_USER=alice run_script yes "" "$SCRIPTS/deb/postinst" configure 0.0.9
    [ "$status" -eq 0 ]
    assert_called "systemctl daemon-reload"
    assert_called "systemctl restart warrend.service"
    assert_not_called "^systemctl (enable|disable|stop)"
    assert_not_called "^usermod"
}

@test "deb upgrade of a helper the administrator disabled: only restarted if it was running" {
    run_script yes "" "$SCRIPTS/deb/postinst" configure 0.0.9
    [ "$status" -eq 0 ]
    assert_called "systemctl try-restart warrend.service"
    assert_not_called "^systemctl (enable|restart )"
}

@test "deb upgrade without a running systemd touches no unit" {
    run_script no "" "$SCRIPTS/deb/postinst" configure 0.0.9
    [ "$status" -eq 0 ]
    assert_not_called "^systemctl"
}

# --- deb: prerm and postrm -------------------------------------------------

@test "deb remove stops the helper (which undoes its network changes)" {
    run_script yes "" "$SCRIPTS/deb/prerm" remove
    [ "$status" -eq 0 ]
    assert_called "systemctl stop warrend.service"
}

@test "deb upgrade leaves the helper running in prerm" {
    run_script yes "" "$SCRIPTS/deb/prerm" upgrade 0.2.0
    [ "$status" -eq 0 ]
    assert_not_called "^systemctl"
}

@test "deb remove keeps state, group and enablement for a reinstall" {
    run_script yes "$UNIT_LINKS" "$SCRIPTS/deb/postrm" remove
    [ "$status" -eq 0 ]
    assert_not_called "^groupdel"
    grep -qx /var/lib/warren/netstate.json "$SANDBOX/files"
    grep -qx /etc/systemd/system/multi-user.target.wants/warrend.service "$SANDBOX/files"
}

@test "deb purge leaves no unit link, mask, group, state, log or policy" {
    touch "$SANDBOX/has-group"
    run_script yes "$UNIT_LINKS
ln -s /dev/null /etc/systemd/system/warrend.service
mkdir -p /run/warren && touch /run/warren/helper.sock
echo keep >/etc/systemd/system/other.service" "$SCRIPTS/deb/postrm" purge
    [ "$status" -eq 0 ]
    assert_called "groupdel warren"
    run cat "$SANDBOX/files"
    [ "$output" = "/etc/systemd/system/other.service" ]
}

@test "deb purge after the group is gone does not fail" {
    run_script no "" "$SCRIPTS/deb/postrm" purge
    [ "$status" -eq 0 ]
    assert_not_called "^groupdel"
}

@test "deb scripts refuse an unknown action" {
    for script in postinst prerm postrm; do
        run_script yes "" "$SCRIPTS/deb/$script" bogus
        [ "$status" -ne 0 ]
        [[ "$output" == *"unknown argument 'bogus'"* ]]
    done
}

# --- rpm scriptlets ($1 = how many versions remain installed) --------------

@test "rpm install: group, user added, unit enabled and started" {
    add_user alice 1000 alice
    SUDO_USER=alice run_script yes "" "$SCRIPTS/rpm/post" 1
    [ "$status" -eq 0 ]
    assert_called "systemd-sysusers warren.conf"
    assert_called "usermod -aG warren alice"
    assert_called "systemctl enable --now warrend.service"
}

@test "rpm install with no user and no systemd (a container image): succeeds, enabled for boot" {
    run_script no "" "$SCRIPTS/rpm/post" 1
    [ "$status" -eq 0 ]
    assert_called "systemctl enable warrend.service"
    assert_not_called "^usermod|^systemctl (start|enable --now)"
}

@test "rpm upgrade: the new package's %post changes nothing, the old one's %postun restarts" {
    run_script yes "" "$SCRIPTS/rpm/post" 2
    [ "$status" -eq 0 ]
    assert_not_called "^systemctl|^usermod"
    : >"$SANDBOX/calls"
    run_script yes "" "$SCRIPTS/rpm/preun" 1
    [ "$status" -eq 0 ]
    assert_not_called "^systemctl"
    touch "$SANDBOX/enabled"
    run_script yes "$UNIT_LINKS" "$SCRIPTS/rpm/postun" 1
    [ "$status" -eq 0 ]
    assert_called "systemctl restart warrend.service"
    grep -qx /var/lib/warren/netstate.json "$SANDBOX/files"
}

@test "rpm erase: stopped and disabled, then nothing is left" {
    run_script yes "" "$SCRIPTS/rpm/preun" 0
    [ "$status" -eq 0 ]
    assert_called "systemctl stop warrend.service"
    assert_called "systemctl disable warrend.service"
    touch "$SANDBOX/has-group"
    run_script yes "$UNIT_LINKS" "$SCRIPTS/rpm/postun" 0
    [ "$status" -eq 0 ]
    assert_called "groupdel warren"
    [ ! -s "$SANDBOX/files" ]
}
