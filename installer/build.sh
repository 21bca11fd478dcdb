#!/usr/bin/env bash
# Builds Warren's installers into target/installer/:
#   deb  warren_<v>_amd64.deb, warren-desktop_<v>_amd64.deb   (installer/linux)
#   rpm  warren-<v>-1.x86_64.rpm, warren-desktop-<v>-1.x86_64.rpm
#   msi  warren-<v>-x86_64.msi: app, CLI, the warrend service (installer/windows)
#   pkg  the macOS package's tree, and the .pkg itself on a Mac (installer/macos)
#   all  every one of them
# PROFILE=release (default) or debug picks the cargo build packaged.
#
# Usage: bash installer/build.sh [deb|rpm|msi|pkg|all]...
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

formats=("$@")
if [ "${#formats[@]}" -eq 0 ] || [[ " ${formats[*]} " == *" all "* ]]; then
    formats=(deb rpm msi pkg)
fi
linux=()
for format in "${formats[@]}"; do
    case "$format" in
        deb | rpm) linux+=("$format") ;;
        msi | pkg) ;;
        *)
            echo "installer/build.sh: unknown format '$format'; use deb, rpm, msi, pkg or all" >&2
            exit 2
            ;;
    esac
done

if [ "${#linux[@]}" -gt 0 ]; then
    bash "$HERE/linux/build.sh" "${linux[@]}"
fi
for format in "${formats[@]}"; do
    case "$format" in
        msi) bash "$HERE/windows/build-msi.sh" ;;
        pkg) bash "$HERE/macos/build-pkg.sh" ;;
    esac
done
