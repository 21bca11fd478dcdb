#!/usr/bin/env bash
# Builds Warren's Linux packages from the workspace:
#   warren         warrend + warren CLI, the systemd unit, the sysusers file
#   warren-desktop the app, its .desktop file (warren:// links) and icons
# as .deb (dpkg-deb) and/or .rpm (rpmbuild) under target/installer/.
#
# Usage: bash installer/linux/build.sh deb|rpm...   (installer/build.sh calls it)
# PROFILE=release (default) or debug: which cargo build to package (the test
# command packages its debug build instead of compiling everything twice).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WHO=installer/linux
# shellcheck source=installer/common.sh
. "$HERE/../common.sh"
STAGE="$OUT/stage-linux"
ARCH_DEB=amd64

[ "$#" -gt 0 ] || die "say which: deb, rpm or both"
for format in "$@"; do
    case "$format" in
        deb)
            need dpkg-deb "install it with: sudo apt-get install dpkg"
            need dpkg-shlibdeps "install it with: sudo apt-get install dpkg-dev"
            ;;
        rpm) need rpmbuild "install it with: sudo apt-get install rpm" ;;
        *) die "unknown format '$format' (deb or rpm)" ;;
    esac
done

profile_dirs ""

# The app embeds the built UI.
if [ ! -f "$ROOT/ui/dist/index.html" ]; then
    echo "== building the UI (ui/dist)"
    npm --prefix "$ROOT/ui" ci --no-audit --no-fund
    npm --prefix "$ROOT/ui" run build
fi
echo "== cargo build ($PROFILE): warrend, warren, warren-desktop"
(cd "$ROOT" && cargo build "${cargo_profile[@]}" -p warrend -p warren -p warren-desktop)

# Stage one tree per package.
rm -rf "$STAGE"
W="$STAGE/warren"
D="$STAGE/warren-desktop"
install -d "$W/usr/bin" "$W/usr/lib/systemd/system" "$W/usr/lib/sysusers.d" "$W/usr/share/doc/warren"
install -m 0755 "$bin_dir/warrend" "$bin_dir/warren" "$W/usr/bin/"
install -m 0644 "$HERE/warrend.service" "$W/usr/lib/systemd/system/warrend.service"
install -m 0644 "$HERE/warren.sysusers" "$W/usr/lib/sysusers.d/warren.conf"
install -m 0644 "$ROOT/README.md" "$W/usr/share/doc/warren/README.md"
install -d "$D/usr/bin" "$D/usr/share/applications" "$D/usr/share/doc/warren-desktop"
install -m 0755 "$bin_dir/warren-desktop" "$D/usr/bin/"
install -m 0644 "$HERE/dev.warren.desktop.desktop" "$D/usr/share/applications/"
for size in 32x32 128x128 512x512; do
    install -d "$D/usr/share/icons/hicolor/$size/apps"
done
install -m 0644 "$ROOT/src-tauri/icons/32x32.png" "$D/usr/share/icons/hicolor/32x32/apps/warren-desktop.png"
install -m 0644 "$ROOT/src-tauri/icons/128x128.png" "$D/usr/share/icons/hicolor/128x128/apps/warren-desktop.png"
install -m 0644 "$ROOT/src-tauri/icons/icon.png" "$D/usr/share/icons/hicolor/512x512/apps/warren-desktop.png"
# Packages carry no debug symbols (a debug build's would be most of its size).
strip --strip-unneeded "$W/usr/bin/"* "$D/usr/bin/"*
for pkg in warren warren-desktop; do
    doc="$STAGE/$pkg/usr/share/doc/$pkg"
    cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: warren
Source: https://warren.dev

Files: *
Copyright: 2026 The Warren authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
    printf '%s (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- Warren maintainers <maintainers@warren.dev>  %s\n' \
        "$pkg" "$VERSION" "$VERSION" "$(date -R -u -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")" |
        gzip -9n >"$doc/changelog.gz"
    chmod 0644 "$doc/copyright" "$doc/changelog.gz"
done

# A package script: its template with the shared steps pasted in.
render_script() { # TEMPLATE OUT
    awk -v lib="$HERE/scripts/lib.sh" '
        /^#WARREN_LIB#$/ { while ((getline line < lib) > 0) print line; close(lib); next }
        { print }' "$1" >"$2"
}

build_deb() {
    local deps_w deps_d
    # dpkg-shlibdeps reads the libraries' symbols files: exact Depends. The
    # tray's indicator library is loaded at run time, so it is named by hand.
    local shl="$STAGE/shlibdeps"
    mkdir -p "$shl/debian"
    printf 'Source: warren\n\nPackage: warren\nArchitecture: any\n' >"$shl/debian/control"
    deps_w=$(cd "$shl" && dpkg-shlibdeps -O "$W/usr/bin/warrend" "$W/usr/bin/warren" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
    deps_d=$(cd "$shl" && dpkg-shlibdeps -O "$D/usr/bin/warren-desktop" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
    rm -rf "$shl"

    install -d -m 0755 "$W/DEBIAN" "$D/DEBIAN"
    for script in postinst prerm postrm; do
        render_script "$HERE/deb/$script" "$W/DEBIAN/$script"
        chmod 0755 "$W/DEBIAN/$script"
    done
    cat >"$W/DEBIAN/control" <<CONTROL
Package: warren
Version: $VERSION
Architecture: $ARCH_DEB
Maintainer: Warren maintainers <maintainers@warren.dev>
Installed-Size: $(du -sk --exclude=DEBIAN "$W" | cut -f1)
Depends: ${deps_w}, systemd | systemd-sysusers
Recommends: systemd-resolved | resolvconf
Section: net
Priority: optional
Homepage: https://warren.dev
Description: private network link to your remote workspaces
 Warren puts this machine on the same private network as your remote
 workspaces. This package holds the helper service (warrend, started at
 boot by systemd, with its WireGuard tunnel, routes and split DNS) and the
 warren command-line client. Members of the group "warren" may use it.
CONTROL
    cat >"$D/DEBIAN/control" <<CONTROL
Package: warren-desktop
Version: $VERSION
Architecture: $ARCH_DEB
Maintainer: Warren maintainers <maintainers@warren.dev>
Installed-Size: $(du -sk --exclude=DEBIAN "$D" | cut -f1)
Depends: ${deps_d}, warren (= $VERSION), libayatana-appindicator3-1 | libappindicator3-1
Section: net
Priority: optional
Homepage: https://warren.dev
Description: desktop app for Warren's workspace network
 The Warren desktop app: sign in, connect and watch your remote
 workspaces from a window and the system tray.
CONTROL
    for pkg in warren warren-desktop; do
        (cd "$STAGE/$pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z |
            xargs -0 md5sum >DEBIAN/md5sums)
        chmod 0644 "$STAGE/$pkg/DEBIAN/md5sums" "$STAGE/$pkg/DEBIAN/control"
        dpkg-deb --root-owner-group -Zxz -z6 --build "$STAGE/$pkg" "$OUT/${pkg}_${VERSION}_${ARCH_DEB}.deb" >/dev/null
        echo "built $OUT/${pkg}_${VERSION}_${ARCH_DEB}.deb"
    done
    rm -rf "$W/DEBIAN" "$D/DEBIAN"
}

build_rpm() {
    local top="$STAGE/rpmbuild"
    rm -rf "$top"
    mkdir -p "$top/SPECS"
    render_script "$HERE/rpm/warren.spec.in" "$top/SPECS/warren.spec.tmp"
    sed -e "s|@VERSION@|$VERSION|g" -e "s|@STAGE@|$STAGE|g" \
        -e "s|@CHANGELOG_DATE@|$(LC_ALL=C date -u -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}" '+%a %b %d %Y')|g" "$top/SPECS/warren.spec.tmp" >"$top/SPECS/warren.spec"
    rm "$top/SPECS/warren.spec.tmp"
    # The binaries are stripped already; no debuginfo subpackage.
    rpmbuild -bb --quiet \
        --define "_topdir $top" \
        --define "debug_package %{nil}" \
        --define "__strip /bin/true" \
        --define "_build_id_links none" \
        "$top/SPECS/warren.spec"
    find "$top/RPMS" -name '*.rpm' -exec cp {} "$OUT/" \;
    for rpm in "$top"/RPMS/*/*.rpm; do echo "built $OUT/$(basename "$rpm")"; done
    rm -rf "$top"
}

mkdir -p "$OUT"
for format in "$@"; do
    "build_$format"
done
