#!/usr/bin/env bash
# Starts a local Warren demo deployment on this machine and shows `warren status`:
# a coordinator on an SQLite file, a demo user (alice) with two workspaces and
# their agents, the helper on a private socket, and the CLI signed in and
# connected. Everything lives in .demo/ and listens on 127.0.0.1 only.
# Run as root, the helper also brings up the WireGuard tunnel (TUN
# `warren-demo`, routes for the demo deployment's prefixes only) and split
# DNS for `.warren` (systemd-resolved if it runs, else /etc/resolv.conf, put
# back byte for byte on stop), and the demo pings an agent and fetches a page
# from a workspace through it, by name. A coturn TURN relay on 127.0.0.1
# (installed as root if missing) gives the coordinator a relay to hand out,
# as a real deployment's would (README, "Relays (TURN)").
#
#   bash scripts/demo.sh         start (or restart) the demo
#   bash scripts/demo.sh stop    stop it and remove .demo/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/.demo"
PORT="${WARREN_DEMO_PORT:-7480}"
URL="http://127.0.0.1:$PORT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

stop_demo() {
    if [[ -f "$DEMO/pids" ]]; then
        while read -r pid; do
            kill "$pid" 2>/dev/null || true
        done <"$DEMO/pids"
        # The helper restores routes and DNS on its way out; give it time.
        for _ in $(seq 1 100); do
            alive=0
            while read -r pid; do
                if kill -0 "$pid" 2>/dev/null; then alive=1; fi
            done <"$DEMO/pids"
            [[ $alive == 0 ]] && break
            sleep 0.1
        done
        while read -r pid; do
            kill -9 "$pid" 2>/dev/null || true
        done <"$DEMO/pids"
    fi
    if [[ -s "$DEMO/state/netstate.json" ]]; then
        # A helper that died without cleaning up: a new one undoes the
        # journal (routes, resolv.conf) as it starts.
        echo "Undoing network changes the demo helper left behind…"
        "$BIN/warrend" --socket "$DEMO/recover.sock" --group "$(id -gn)" --log-dir "$DEMO/logs" \
            --state-dir "$DEMO/state" >/dev/null 2>&1 &
        local rpid=$!
        for _ in $(seq 1 50); do
            [[ -S "$DEMO/recover.sock" ]] && break
            sleep 0.1
        done
        kill "$rpid" 2>/dev/null || true
        wait "$rpid" 2>/dev/null || true
    fi
    rm -rf "$DEMO"
}

if [[ "${1:-}" == "stop" ]]; then
    stop_demo
    echo "Demo stopped."
    exit 0
fi

if ! command -v cargo >/dev/null; then
    echo "error: cargo is not installed; install Rust from your distribution or rustup first" >&2
    exit 1
fi

echo "==> Building Warren"
(cd "$ROOT" && cargo build --quiet -p warren-coord -p warren-agent -p warrend -p warren)

stop_demo
mkdir -p "$DEMO/logs" "$DEMO/config"
DB="$DEMO/coordinator.db"
coord() { "$BIN/warren-coord" --db "$DB" "$@"; }

echo "==> Creating the demo deployment (user alice, workspaces api and web)"
coord user add alice >/dev/null
coord user add bob >/dev/null
TOKEN="$(coord token create alice)"
coord workspace add --owner alice api >/dev/null
coord workspace add --owner alice web >/dev/null
coord workspace add --owner bob private >/dev/null
for spec in api/main api/worker web/main; do
    ws="${spec%/*}"
    agent="${spec#*/}"
    coord agent add --owner alice --workspace "$ws" "$agent" >"$DEMO/agent-$ws-$agent.token"
    # The agent refuses a token file other users can read.
    chmod 600 "$DEMO/agent-$ws-$agent.token"
done

# A TURN relay like a deployment's (README, "Relays (TURN)"), on loopback:
# coturn with its own config, secret, database, pid file and log under .demo/.
# The coordinator gets the same secret and hands every device and agent
# short-lived credentials for it. The secret is never printed.
TURN_PORT="${WARREN_DEMO_TURN_PORT:-$((PORT + 200))}"
TURN_REALM=warren
TURN_ARGS=()

# Installs coturn if `turnserver` is missing; returns 1 (with the reason)
# when it can't. Installing Debian's package may start a system coturn on
# 3478; the demo's own listens elsewhere.
install_coturn() {
    command -v turnserver >/dev/null 2>&1 && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "(no TURN relay: install coturn first, e.g. sudo apt-get update && sudo apt-get install coturn)"
        return 1
    fi
    echo "==> Installing coturn"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
        echo "(apt-get update reported errors; installing from the lists it has)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn >/dev/null; then
        echo "(could not install coturn; install it with apt-get and run the demo again)"
        return 1
    fi
}

# Starts coturn on 127.0.0.1:$TURN_PORT and fills TURN_ARGS for the
# coordinator; returns 1 (with the reason) if it doesn't come up.
start_relay() {
    local dir="$DEMO/turn" pid
    install_coturn || return 1
    mkdir -p "$dir"
    chmod 700 "$dir"
    # The secret and the config that repeats it are the user's alone (root's
    # when the demo runs as root) from their first byte.
    (
        umask 077
        od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/secret"
        # Peers: only this machine, where every demo agent and the helper
        # listen: 127.0.0.1 and its own IPv4 addresses outside any Warren
        # tunnel (their host candidates). Loopback peers need
        # allow-loopback-peers (never in production); every other IPv4
        # address is denied, and coturn checks allowed-peer-ip before
        # denied-peer-ip. The relay address is IPv4 only, so it has no IPv6
        # peers to deny.
        cat >"$dir/turnserver.conf" <<CONF
listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port=$TURN_PORT
use-auth-secret
static-auth-secret=$(cat "$dir/secret")
realm=$TURN_REALM
fingerprint
no-tls
no-dtls
no-tcp
no-tcp-relay
no-cli
no-multicast-peers
allow-loopback-peers
denied-peer-ip=0.0.0.0-255.255.255.255
allowed-peer-ip=127.0.0.1
$(ip -o -4 addr show scope global 2>/dev/null |
            awk '$2 !~ /^warren/ { split($4, a, "/"); print "allowed-peer-ip=" a[1] }')
user-quota=10
total-quota=100
userdb=$dir/turndb
pidfile=$dir/turnserver.pid
log-file=$DEMO/logs/turnserver.log
simple-log
no-stdout-log
CONF
    )
    turnserver -c "$dir/turnserver.conf" >"$DEMO/logs/turnserver.out" 2>&1 &
    pid=$!
    echo "$pid" >>"$DEMO/pids"
    for _ in $(seq 1 50); do
        # coturn's own STUN client: a binding answer means it is serving.
        if timeout 1 turnutils_stunclient -p "$TURN_PORT" 127.0.0.1 >/dev/null 2>&1; then
            TURN_ARGS=(--turn "127.0.0.1:$TURN_PORT" --turn-secret-file "$dir/secret"
                --turn-realm "$TURN_REALM")
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "(coturn did not start on 127.0.0.1:$TURN_PORT; see $DEMO/logs/turnserver.log, or set WARREN_DEMO_TURN_PORT to a free port)"
    tail -3 "$DEMO/logs/turnserver.log" 2>/dev/null || true
    return 1
}

echo "==> Starting a TURN relay (coturn) on 127.0.0.1:$TURN_PORT"
start_relay || echo "(the demo runs without a relay)"

echo "==> Starting the coordinator on $URL"
"$BIN/warren-coord" --db "$DB" serve --listen "127.0.0.1:$PORT" "${TURN_ARGS[@]}" \
    >"$DEMO/logs/coordinator.out" 2>"$DEMO/logs/coordinator.log" &
echo $! >>"$DEMO/pids"
for _ in $(seq 1 50); do
    if grep -q "listening on" "$DEMO/logs/coordinator.out" 2>/dev/null; then break; fi
    sleep 0.1
done
if ! grep -q "listening on" "$DEMO/logs/coordinator.out"; then
    echo "error: the coordinator did not start; see $DEMO/logs/coordinator.log" >&2
    tail -5 "$DEMO/logs/coordinator.log" >&2 || true
    exit 1
fi

echo "==> Starting the agents"
WG_PORT=$((PORT + 100))
for tokfile in "$DEMO"/agent-*.token; do
    name="$(basename "$tokfile" .token)"
    WG_PORT=$((WG_PORT + 1))
    "$BIN/warren-agent" --coordinator "$URL" --token-file "$tokfile" \
        --key-file "$DEMO/$name.key" --listen-port "$WG_PORT" --endpoint "127.0.0.1:$WG_PORT" \
        --allow-ports 22,8080,3000-3010 >"$DEMO/logs/$name.log" 2>&1 &
    echo $! >>"$DEMO/pids"
done

# A web page "inside" workspace api (the agents forward allowed ports to
# this machine's 127.0.0.1).
mkdir -p "$DEMO/www"
echo "Hello from workspace api, through the Warren tunnel." >"$DEMO/www/index.html"
WEB_PORT=3007
if command -v python3 >/dev/null; then
    python3 -m http.server "$WEB_PORT" --bind 127.0.0.1 --directory "$DEMO/www" \
        >"$DEMO/logs/web.log" 2>&1 &
    echo $! >>"$DEMO/pids"
fi

TUNNEL_ARGS=(--no-tunnel)
if [[ "$(id -u)" == 0 ]]; then
    TUNNEL_ARGS=(--tun-name warren-demo --state-dir "$DEMO/state")
    echo "==> Starting the helper with its tunnel (socket $DEMO/helper.sock)"
else
    echo "==> Starting the helper without a tunnel (not root; socket $DEMO/helper.sock)"
fi
"$BIN/warrend" --socket "$DEMO/helper.sock" --group "$(id -gn)" --log-dir "$DEMO/logs" \
    "${TUNNEL_ARGS[@]}" >"$DEMO/logs/warrend.stderr" 2>&1 &
echo $! >>"$DEMO/pids"
for _ in $(seq 1 50); do
    [[ -S "$DEMO/helper.sock" ]] && break
    sleep 0.1
done

export WARREN_SOCKET="$DEMO/helper.sock" WARREN_CONFIG_DIR="$DEMO/config" WARREN_KEYRING=file
echo "==> Signing in and connecting"
printf '%s\n' "$TOKEN" | "$BIN/warren" login --url "$URL" --token-stdin 2>/dev/null
"$BIN/warren" up
sleep 0.5
if [[ "$(id -u)" == 0 ]]; then
    echo
    echo "==> Through the tunnel: warren ping api.warren"
    "$BIN/warren" ping api.warren -c 2 || true
    if command -v curl >/dev/null; then
        echo "==> curl http://api.warren:$WEB_PORT/   (the name resolves through the helper's DNS stub)"
        curl -s --max-time 5 "http://api.warren:$WEB_PORT/" || echo "(no answer)"
    fi
fi
echo
"$BIN/warren" status

# The desktop app, signed in through the same config directory. Building it
# needs WebKitGTK's headers and Node.js; as root the demo installs them.

# The Debian packages the desktop build still needs, one a line.
desktop_missing_packages() {
    local pkg
    for pkg in libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev libssl-dev; do
        dpkg -s "$pkg" >/dev/null 2>&1 || echo "$pkg"
    done
    # Node.js may come from elsewhere than Debian (NodeSource, nvm, an
    # image's own): only the commands matter. Asking apt for Debian's npm
    # next to NodeSource's nodejs (which bundles npm and conflicts with it)
    # fails with "held broken packages", so npm is asked for only when no
    # npm command exists and the installed nodejs package does not bundle it.
    command -v node >/dev/null 2>&1 || echo nodejs
    if ! command -v npm >/dev/null 2>&1; then
        if dpkg-query -W -f='${Provides}' nodejs 2>/dev/null | grep -qw npm; then
            echo "warning: the installed nodejs package should provide npm but there is no npm command; reinstall nodejs" >&2
        else
            echo npm
        fi
    fi
}

# Installs what desktop_missing_packages lists; returns 1 (with the reason)
# when it can't. Refreshes the package lists first: on a fresh machine they
# are old, and installing from them fails with "held broken packages".
install_desktop_packages() {
    local missing
    mapfile -t missing < <(desktop_missing_packages)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "(skipping the desktop app: install ${missing[*]} first, e.g. sudo apt-get update && sudo apt-get install ${missing[*]})"
        return 1
    fi
    echo "==> Installing ${missing[*]}"
    # A failing third-party list need not stop the install; apt-get install
    # says what is still unavailable.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
        echo "(apt-get update reported errors; installing from the lists it has)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        echo "(could not install ${missing[*]}; install them with apt-get and run the demo again)"
        return 1
    fi
}

build_desktop() {
    install_desktop_packages || return 1
    if [[ ! -d "$ROOT/ui/node_modules" ]]; then
        npm --prefix "$ROOT/ui" ci --no-audit --no-fund --silent || return 1
    fi
    npm --prefix "$ROOT/ui" run --silent build >/dev/null || return 1
    (cd "$ROOT" && cargo build --quiet -p warren-desktop) || return 1
}
DESKTOP_NOTE="  $BIN/warren-desktop                                   # the desktop app (needs a display)"
RELAY_NOTE="The TURN relay: none (see above)."
if [[ ${#TURN_ARGS[@]} -gt 0 ]]; then
    RELAY_NOTE="The TURN relay: coturn on 127.0.0.1:$TURN_PORT (config $DEMO/turn/turnserver.conf, log $DEMO/logs/turnserver.log)."
fi
echo
echo "==> Building the desktop app"
if build_desktop; then
    if [[ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]]; then
        echo "==> Starting the desktop app (window and tray icon)"
        WARREN_SOCKET="$DEMO/helper.sock" WARREN_CONFIG_DIR="$DEMO/config" WARREN_KEYRING=file \
            WARREN_DESKTOP_LOG_DIR="$DEMO/logs" "$BIN/warren-desktop" >"$DEMO/logs/desktop.log" 2>&1 &
        echo $! >>"$DEMO/pids"
    else
        echo "(no display here: start the app from a desktop session with the command below)"
    fi
else
    echo "(the desktop app was not built; the CLI demo runs without it)"
fi
cat <<MSG

The demo is running. Try:
  export WARREN_SOCKET=$DEMO/helper.sock WARREN_CONFIG_DIR=$DEMO/config WARREN_KEYRING=file
  $BIN/warren watch                                   # live view (Ctrl-C to leave)
  $BIN/warren-coord --db $DB workspace add --owner alice docs   # appears within a second
  $BIN/warren status --json
  $BIN/warren ping api.warren                          # as root: through the tunnel
  curl http://api.warren:$WEB_PORT/                            # as root: by name
$DESKTOP_NOTE
$RELAY_NOTE
Stop it with: bash scripts/demo.sh stop
MSG
