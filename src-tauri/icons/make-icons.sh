#!/usr/bin/env bash
# Regenerates the app and tray icons from the Warren mark (the same drawing
# as the UI's <Logo>, ui/src/components/icons.tsx): the app icon in three
# sizes and one tray icon per state, with a status dot. Needs rsvg-convert
# (librsvg2-bin) and ImageMagick. The PNGs are committed; this is only for
# changing them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ACCENT='#2f62d0'

mark() { # size output [dot colour]
    local dot=""
    if [[ -n "${3:-}" ]]; then
        dot="<circle cx=\"25.5\" cy=\"25.5\" r=\"5.5\" fill=\"$3\" stroke=\"#fff\" stroke-width=\"1.8\"/>"
    fi
    local svg
    svg=$(mktemp --suffix=.svg)
    cat >"$svg" <<SVG
<svg xmlns="http://www.w3.org/2000/svg" width="$1" height="$1" viewBox="0 0 32 32">
<rect width="32" height="32" rx="8" fill="$ACCENT"/>
<path d="M8 23v-5a8 8 0 0 1 16 0v5" fill="none" stroke="#fff" stroke-width="2.6" stroke-linecap="round"/>
<path d="M6 23h20" stroke="#fff" stroke-width="2.6" stroke-linecap="round"/>
<circle cx="16" cy="18.5" r="2.2" fill="#fff"/>
$dot
</svg>
SVG
    # Tauri wants 8-bit RGBA.
    rsvg-convert -w "$1" -h "$1" "$svg" | convert - -depth 8 "PNG32:$2"
    rm -f "$svg"
}

mark 512 icon.png
mark 128 128x128.png
mark 32 32x32.png
mark 64 tray-disconnected.png '#9ca3af'
mark 64 tray-connecting.png '#f59e0b'
mark 64 tray-connected.png '#16a34a'
mark 64 tray-error.png '#dc2626'
# Windows wants an .ico (the exe's resource and the installer).
convert icon.png -define icon:auto-resize=256,64,48,32,16 icon.ico
