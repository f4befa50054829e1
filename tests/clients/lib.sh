# Shared by tests/clients/*/run: build the release binaries, start order-svc and approval-svc on
# free loopback ports with authentication on, stop them at exit. Source it; it is not a suite
# itself (not executable).
#
# Authentication: `lab auth init` writes a fresh signing key into $LAB_WORK/keys; both services
# verify with its jwks.json (AUTH_KEYS), approval-svc presents a `shop-client` token with sub
# `approval-svc` (ORDER_SVC_TOKEN_FILE), as `lab up` does. `lab_token SUB ROLES` mints a token
# for a suite's calls.
#
# Databases: with DATABASE_URL set, each service gets a fresh database on that server (created
# with psql); without it, each binary starts its own private throwaway PostgreSQL.
# Binaries: $LAB_BIN_DIR when set, else target/release after `cargo build --release`.

LAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LAB_WORK="$(mktemp -d "${TMPDIR:-/tmp}/lab-clients.XXXXXX")"
LAB_PIDS=()

lab_cleanup() {
    local pid
    for pid in "${LAB_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${LAB_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -f "$LAB_WORK/databases" ]; then
        while read -r name; do
            psql "$DATABASE_URL" -qtAc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null 2>&1 || true
        done <"$LAB_WORK/databases"
    fi
    rm -rf "$LAB_WORK"
}
trap lab_cleanup EXIT

lab_bin_dir() {
    if [ -n "${LAB_BIN_DIR:-}" ]; then
        echo "$LAB_BIN_DIR"
        return
    fi
    (cd "$LAB_ROOT" && cargo build --release --quiet -p order-svc -p approval-svc -p lab) >&2
    echo "${CARGO_TARGET_DIR:-$LAB_ROOT/target}/release"
}

# A fresh database URL on DATABASE_URL's server, or nothing (the binary then starts its own).
lab_fresh_database() {
    [ -n "${DATABASE_URL:-}" ] || return 0
    local name="lab_client_$1_$$_$RANDOM"
    psql "$DATABASE_URL" -qtAc "CREATE DATABASE \"$name\"" >/dev/null
    echo "$name" >>"$LAB_WORK/databases"
    python3 - "$DATABASE_URL" "$name" <<'EOF'
import sys, urllib.parse
url, name = sys.argv[1], sys.argv[2]
parts = urllib.parse.urlsplit(url)
print(urllib.parse.urlunsplit(parts._replace(path="/" + name)))
EOF
}

# lab_start NAME BINARY [ENV=VALUE…]: starts a service, waits for `listening on <addr>` and sets
# LAB_ADDR to that address. Its log is $LAB_WORK/NAME.log; its pid is appended to LAB_PIDS (use
# lab_pid_of NAME to read it). Not for a command substitution: it must run in this shell.
lab_start() {
    local name="$1" binary="$2"
    shift 2
    local log="$LAB_WORK/$name.log" database
    database="$(lab_fresh_database "$name")"
    local args=(--listen 127.0.0.1:0)
    [ -n "$database" ] && args+=(--database-url "$database")
    env LOG_FORMAT=pretty NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" "$@" \
        "$LAB_BIN/$binary" "${args[@]}" >"$log" 2>&1 &
    local pid=$!
    LAB_PIDS+=("$pid")
    echo "$pid" >"$LAB_WORK/$name.pid"
    local waited=0
    while ! grep -q "listening on " "$log"; do
        if ! kill -0 "$pid" 2>/dev/null || [ "$waited" -ge 600 ]; then
            echo "$binary did not start:" >&2
            tail -20 "$log" >&2
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    LAB_ADDR="$(grep -o "listening on [0-9.:]*" "$log" | head -1 | awk '{print $3}')"
}

lab_pid_of() {
    cat "$LAB_WORK/$1.pid"
}

# lab_token SUB ROLES: prints a token for SUB with ROLES (comma-separated) signed by the key
# lab_start_both made.
lab_token() {
    "$LAB_BIN/lab" auth token --key "$LAB_WORK/keys/private.pem" --sub "$1" --roles "$2" --ttl 1h
}

# lab_start_both [APPROVAL_ENV=VALUE…]: a fresh signing key, then both services with
# authentication on; sets ORDER_ADDR and APPROVAL_ADDR.
lab_start_both() {
    LAB_BIN="$(lab_bin_dir)"
    "$LAB_BIN/lab" auth init "$LAB_WORK/keys" >/dev/null
    lab_token approval-svc shop-client >"$LAB_WORK/keys/order-svc.token"
    local auth="AUTH_KEYS=$LAB_WORK/keys/jwks.json"
    lab_start order order-svc "$auth"
    ORDER_ADDR="$LAB_ADDR"
    lab_start approval approval-svc "$auth" ORDER_SVC_URL="http://$ORDER_ADDR" \
        ORDER_SVC_TOKEN_FILE="$LAB_WORK/keys/order-svc.token" "$@"
    APPROVAL_ADDR="$LAB_ADDR"
    echo "order-svc on $ORDER_ADDR, approval-svc on $APPROVAL_ADDR"
}
