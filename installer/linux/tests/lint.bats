#!/usr/bin/env bats
# The built Linux packages pass the distributions' checkers and hold what
# they should: lintian and rpmlint without errors, the unit verified by
# systemd-analyze (which returns 0 on unknown keys, so any output fails)
# with an exposure of at most 4.0, a valid .desktop file, shellcheck-clean
# package scripts, and the file lists and modes the helper relies on.

load helpers

setup_file() {
    require_packages
}

# A root for systemd-analyze: the staged package plus the host's targets
# and the units ours orders itself after.
verify_root() {
    local root="$BATS_TEST_TMPDIR/root"
    mkdir -p "$root"
    dpkg-deb -x "$DEB" "$root"
    cp -n /usr/lib/systemd/system/*.target "$root/usr/lib/systemd/system/"
    for unit in dbus.service dbus.socket systemd-resolved.service; do
        if [ -f "/usr/lib/systemd/system/$unit" ]; then
            cp -n "/usr/lib/systemd/system/$unit" "$root/usr/lib/systemd/system/"
        fi
    done
    echo "$root"
}

@test "lintian finds no errors in either deb" {
    run lintian --tag-display-limit 0 "$DEB" "$DESKTOP_DEB"
    echo "$output"
    ! grep -q '^E:' <<<"$output"
}

@test "rpmlint finds no errors in either rpm" {
    run rpmlint -c "$REPO_ROOT/installer/linux/rpmlint.toml" "$RPM" "$DESKTOP_RPM"
    echo "$output"
    [[ "$output" == *" 0 errors"* ]]
}

@test "systemd-analyze verify prints nothing for the staged unit, and does catch a typo" {
    local root
    root=$(verify_root)
    run systemd-analyze verify --root="$root" /usr/lib/systemd/system/warrend.service
    echo "$output"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    # The same check on a unit with an unknown key: it must speak up.
    sed 's/^Restart=always/Restart=always\nRestartt=always/' \
        "$root/usr/lib/systemd/system/warrend.service" >"$root/usr/lib/systemd/system/typo.service"
    run systemd-analyze verify --root="$root" /usr/lib/systemd/system/typo.service
    [[ "$output" == *"Restartt"* ]]
}

@test "the unit's exposure (systemd-analyze security) is at most 4.0" {
    local root
    root=$(verify_root)
    run systemd-analyze security --offline=yes --root="$root" warrend.service
    local score
    score=$(sed -n 's/.*Overall exposure level for warrend.service: \([0-9.]*\).*/\1/p' <<<"$output")
    echo "exposure: $score"
    [ -n "$score" ]
    awk -v s="$score" 'BEGIN { exit !(s <= 4.0) }'
}

@test "the unit is what the helper and the app expect" {
    local unit
    unit=$(dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/lib/systemd/system/warrend.service)
    grep -qx 'Type=notify' <<<"$unit"
    grep -qx 'Restart=always' <<<"$unit"
    grep -qx 'ExecStart=/usr/bin/warrend' <<<"$unit"
    # /run/warren/helper.sock is warren_ipc::DEFAULT_SOCKET.
    grep -qx 'RuntimeDirectory=warren' <<<"$unit"
    grep -q 'pub const DEFAULT_SOCKET: &str = "/run/warren/helper.sock";' "$REPO_ROOT/crates/warren-ipc/src/lib.rs"
    grep -qx 'StateDirectory=warren' <<<"$unit"
    grep -qx 'LogsDirectory=warren' <<<"$unit"
    grep -qx 'DeviceAllow=/dev/net/tun rw' <<<"$unit"
    grep -qx 'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_CHOWN' <<<"$unit"
    grep -qx 'WantedBy=multi-user.target' <<<"$unit"
}

@test "the .desktop file is valid and claims warren:// links" {
    local dir="$BATS_TEST_TMPDIR/desktop"
    mkdir -p "$dir"
    dpkg-deb -x "$DESKTOP_DEB" "$dir"
    local file="$dir/usr/share/applications/dev.warren.desktop.desktop"
    run desktop-file-validate "$file"
    echo "$output"
    [ -z "$output" ]
    grep -qx 'MimeType=x-scheme-handler/warren;' "$file"
    grep -qx 'Exec=warren-desktop %u' "$file"
    for size in 32x32 128x128 512x512; do
        [ -s "$dir/usr/share/icons/hicolor/$size/apps/warren-desktop.png" ]
    done
}

@test "the package scripts are shellcheck-clean POSIX sh" {
    extract_scripts
    for script in "$SCRIPTS"/deb/postinst "$SCRIPTS"/deb/prerm "$SCRIPTS"/deb/postrm \
        "$SCRIPTS"/rpm/post "$SCRIPTS"/rpm/preun "$SCRIPTS"/rpm/postun; do
        sh -n "$script"
        # The rpm scriptlets have no #! line; rpm runs them with /bin/sh.
        # SC2317: each script uses only some of the shared functions.
        shellcheck -s sh -e SC2317 "$script"
    done
}

@test "the debs and rpms hold the same files, with the modes the helper needs" {
    run dpkg-deb -c "$DEB"
    echo "$output"
    grep -qE '^-rwxr-xr-x root/root .* \./usr/bin/warrend$' <<<"$output"
    grep -qE '^-rwxr-xr-x root/root .* \./usr/bin/warren$' <<<"$output"
    grep -qE '^-rw-r--r-- root/root .* \./usr/lib/systemd/system/warrend.service$' <<<"$output"
    grep -qE '^-rw-r--r-- root/root .* \./usr/lib/sysusers.d/warren.conf$' <<<"$output"
    local deb_files rpm_files
    deb_files=$( (dpkg-deb -c "$DEB"; dpkg-deb -c "$DESKTOP_DEB") | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }' | sort)
    rpm_files=$(rpm -qlp "$RPM" "$DESKTOP_RPM" | sort)
    [ "$deb_files" = "$rpm_files" ]
    # The group the sysusers file creates is the one the helper chowns to.
    [ "$(dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/lib/sysusers.d/warren.conf | grep -v '^#')" = "g warren -" ]
    grep -q 'pub const DEFAULT_GROUP: &str = "warren";' "$REPO_ROOT/crates/warren-ipc/src/lib.rs"
}

@test "the packages carry no debug symbols and the desktop package needs the helper's" {
    local dir="$BATS_TEST_TMPDIR/x"
    mkdir -p "$dir"
    dpkg-deb -x "$DEB" "$dir"
    run file "$dir/usr/bin/warrend"
    [[ "$output" == *"stripped"* ]]
    [[ "$output" != *"not stripped"* ]]
    dpkg-deb -f "$DESKTOP_DEB" Depends | grep -q "warren (= $VERSION)"
    rpm -qp --requires "$DESKTOP_RPM" | grep -q "^warren = $VERSION-1"
}
