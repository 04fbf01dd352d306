#!/usr/bin/env bash
# A multi-node Ray cluster on one machine: a head plus N worker nodes, for trying
# multi-node behaviour (placement, spreading, node loss) on a laptop or a CI box.
#
# Every node runs in its own process session (setsid), and the script records each
# session id, so `stop` ends exactly the processes of this cluster and nothing else.
# It never runs a bare `ray stop`: that kills every Ray process of the user.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: cluster/local.sh start [N] | stop | status | env | --help

  start [N]   start a head node plus N worker nodes (default N=1) on this machine.
              Re-running it is safe: a running head is kept and only missing
              workers are started.
  stop        stop the nodes this script started (by recorded process session and
              temp dir); other Ray clusters on the machine are not touched.
  status      say which nodes run; exit 0 when the head runs, 3 when it does not.
  env         print the export lines a client needs (source it: eval "$(... env)").

Token auth is on: a random token is written to STATE_DIR/auth_token (mode 600) and
every node and client must send it (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH).
Servers bind 127.0.0.1 where Ray allows it (dashboard); Ray's gRPC servers listen on
all interfaces whatever --node-ip-address says, hence the token.

Environment (all optional):
  CDIFLOW_LOCAL_RAY_STATE_DIR   state folder (token, env file, node records, logs);
                                default: ./workspace/local-ray
  CDIFLOW_LOCAL_RAY_TEMP_DIR    Ray --temp-dir root; default: a short folder under
                                ${TMPDIR:-/tmp} named after the state dir (Unix socket
                                paths must stay under 107 characters)
  CDIFLOW_LOCAL_RAY_NUM_CPUS    --num-cpus of each node (default 1)
  CDIFLOW_LOCAL_RAY_OBJECT_STORE_BYTES
                                --object-store-memory of each node (default 150000000)
  CDIFLOW_LOCAL_RAY_KEEP_LOGS   1 keeps the Ray temp dir (logs) after stop
  CDIFLOW_LOCAL_RAY_STOP_GRACE_S
                                seconds between SIGTERM and SIGKILL on stop (default 5)
  RAY_BIN                       the ray command (default: ray on PATH)
USAGE
}

die() { echo "local.sh: $*" >&2; exit 2; }

STATE_DIR="${CDIFLOW_LOCAL_RAY_STATE_DIR:-$PWD/workspace/local-ray}"
NUM_CPUS="${CDIFLOW_LOCAL_RAY_NUM_CPUS:-1}"
OBJECT_STORE_BYTES="${CDIFLOW_LOCAL_RAY_OBJECT_STORE_BYTES:-150000000}"
RAY_BIN="${RAY_BIN:-ray}"
NODES_DIR="$STATE_DIR/nodes"
TOKEN_FILE="$STATE_DIR/auth_token"
ENV_FILE="$STATE_DIR/env.sh"
PORTS_FILE="$STATE_DIR/ports"
STOP_GRACE_S="${CDIFLOW_LOCAL_RAY_STOP_GRACE_S:-5}"

[[ "$NUM_CPUS" =~ ^[0-9]+$ ]] || die "CDIFLOW_LOCAL_RAY_NUM_CPUS must be an integer"
[[ "$OBJECT_STORE_BYTES" =~ ^[0-9]+$ ]] || die "CDIFLOW_LOCAL_RAY_OBJECT_STORE_BYTES must be an integer"

python_bin() {
    command -v python3 || command -v python || die "python3 not found"
}

absolute_state_dir() {
    mkdir -p "$STATE_DIR"
    STATE_DIR="$(cd "$STATE_DIR" && pwd -P)"
    # One start/stop at a time per state dir (released when the script exits; the Ray
    # daemons get the lock fd closed, 9>&-, or they would hold it forever).
    if command -v flock > /dev/null; then
        exec 9> "$STATE_DIR/.lock"
        flock -w 300 9 || die "another local.sh holds $STATE_DIR/.lock"
    fi
    NODES_DIR="$STATE_DIR/nodes"
    TOKEN_FILE="$STATE_DIR/auth_token"
    ENV_FILE="$STATE_DIR/env.sh"
    PORTS_FILE="$STATE_DIR/ports"
}

temp_root() {
    # Short and unique per state dir: Ray puts Unix sockets under the temp dir.
    if [[ -n "${CDIFLOW_LOCAL_RAY_TEMP_DIR:-}" ]]; then
        echo "$CDIFLOW_LOCAL_RAY_TEMP_DIR"
        return
    fi
    local hash
    hash="$(printf '%s' "$STATE_DIR" | cksum | cut -d' ' -f1)"
    echo "${TMPDIR:-/tmp}/cdiflow-ray-$(id -u)-$hash"
}

free_port() {
    # Ask the kernel for a free port; a small race with other starters remains.
    "$(python_bin)" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_answers() {
    "$(python_bin)" - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

make_token() {
    if [[ ! -s "$TOKEN_FILE" ]]; then
        (umask 077 && "$(python_bin)" -c 'import secrets; print(secrets.token_hex(32))' \
            > "$TOKEN_FILE")
    fi
    chmod 600 "$TOKEN_FILE"
}

# pids of a node: every process in its recorded session, plus any process whose
# command line names the node's temp dir (in case one left the session).
node_pids() {
    local name="$1" sid="" tdir
    tdir="$(temp_root)/$name/"
    [[ -f "$NODES_DIR/$name.sid" ]] && sid="$(cat "$NODES_DIR/$name.sid")"
    # The temp dir goes to awk through the environment, so awk's own command line
    # does not match it.
    ps -eo pid=,sid=,args= | NODE_TDIR="$tdir" awk -v sid="$sid" '
        { pid = $1; s = $2; $1 = ""; $2 = ""; args = $0
          if (index(args, ENVIRON["NODE_TDIR"]) > 0) { print pid; owned[s] = 1; next }
          if (sid != "" && s == sid) cand[pid] = s }
        END { for (p in cand) if (owned[cand[p]]) print p }' | sort -u
}

node_running() {
    [[ -n "$(node_pids "$1")" ]]
}

session_of_node() {
    # The session id of the processes that name this node's temp dir.
    local tdir
    tdir="$(temp_root)/$1/"
    ps -eo sid=,args= | NODE_TDIR="$tdir" awk '
        index($0, ENVIRON["NODE_TDIR"]) > 0 && sid == "" { sid = $1 }
        END { if (sid != "") print sid }'
}

known_nodes() {
    # Workers first, so that the head goes last on stop.
    local f
    shopt -s nullglob
    for f in "$NODES_DIR"/worker-*.sid; do basename "$f" .sid; done | sort -t- -k2 -n
    [[ -f "$NODES_DIR/head.sid" ]] && echo head
    shopt -u nullglob
}

stop_node() {
    local name="$1" pids waited=0
    pids="$(node_pids "$name")"
    if [[ -n "$pids" ]]; then
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null || true
        while [[ -n "$(node_pids "$name")" && $waited -lt $STOP_GRACE_S ]]; do
            sleep 1
            waited=$((waited + 1))
        done
        pids="$(node_pids "$name")"
        if [[ -n "$pids" ]]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            sleep 1
        fi
    fi
    rm -f "$NODES_DIR/$name.sid"
    if [[ "${CDIFLOW_LOCAL_RAY_KEEP_LOGS:-0}" != 1 ]]; then
        rm -rf "$(temp_root)/$name"
    fi
    echo "stopped $name"
}

write_env() {
    local gcs="$1" dash="$2"
    cat > "$ENV_FILE" <<ENV
export RAY_ADDRESS=127.0.0.1:$gcs
export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$dash
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$TOKEN_FILE
ENV
}

ray_env() {
    # The environment every `ray start` of this cluster runs in.
    env -u RAY_ADDRESS -u RAY_AUTH_TOKEN RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$TOKEN_FILE" \
        RAY_USAGE_STATS_ENABLED=0 "$@"
}

start_head() {
    local gcs dash client agent metrics tdir
    gcs="$(free_port)"; dash="$(free_port)"; client="$(free_port)"
    agent="$(free_port)"; metrics="$(free_port)"
    tdir="$(temp_root)/head"
    mkdir -p "$tdir" "$STATE_DIR/logs" "$NODES_DIR"
    : > "$NODES_DIR/head.sid"  # recorded first: `stop` sweeps even an interrupted start
    echo "starting head (GCS port $gcs, dashboard 127.0.0.1:$dash)"
    if ! ray_env setsid "$RAY_BIN" start --head \
        --node-ip-address=127.0.0.1 --port="$gcs" \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dash" \
        --ray-client-server-port="$client" --dashboard-agent-listen-port="$agent" \
        --metrics-export-port="$metrics" \
        --num-cpus="$NUM_CPUS" --object-store-memory="$OBJECT_STORE_BYTES" \
        --temp-dir="$tdir" --disable-usage-stats \
        > "$STATE_DIR/logs/head.log" 2>&1 < /dev/null 9>&-; then
        record_session head
        stop_node head > /dev/null
        die "head failed to start; see $STATE_DIR/logs/head.log"
    fi
    record_session head
    printf 'gcs=%s\ndashboard=%s\n' "$gcs" "$dash" > "$PORTS_FILE"
    write_env "$gcs" "$dash"
}

start_worker() {
    local name="$1" gcs="$2" agent metrics tdir
    agent="$(free_port)"; metrics="$(free_port)"
    tdir="$(temp_root)/$name"
    mkdir -p "$tdir" "$STATE_DIR/logs" "$NODES_DIR"
    : > "$NODES_DIR/$name.sid"  # recorded first: `stop` sweeps even an interrupted start
    echo "starting $name"
    if ! ray_env setsid "$RAY_BIN" start --address="127.0.0.1:$gcs" \
        --node-ip-address=127.0.0.1 \
        --dashboard-agent-listen-port="$agent" --metrics-export-port="$metrics" \
        --num-cpus="$NUM_CPUS" --object-store-memory="$OBJECT_STORE_BYTES" \
        --temp-dir="$tdir" --disable-usage-stats \
        > "$STATE_DIR/logs/$name.log" 2>&1 < /dev/null 9>&-; then
        record_session "$name"
        stop_node "$name" > /dev/null
        die "$name failed to start; see $STATE_DIR/logs/$name.log"
    fi
    record_session "$name"
}

record_session() {
    local sid
    sid="$(session_of_node "$1")"
    mkdir -p "$NODES_DIR"
    if [[ -n "$sid" ]]; then
        echo "$sid" > "$NODES_DIR/$1.sid"
    else
        : > "$NODES_DIR/$1.sid"  # nothing runs; stop still sweeps the temp dir
    fi
}

gcs_port() {
    [[ -f "$PORTS_FILE" ]] && sed -n 's/^gcs=//p' "$PORTS_FILE"
}

print_client_env() {
    echo "address: $(sed -n 's/^export RAY_ADDRESS=//p' "$ENV_FILE")"
    echo "a client exports (or: eval \"\$(cluster/local.sh env)\"):"
    sed 's/^/  /' "$ENV_FILE"
}

cmd_start() {
    local n="${1:-1}" gcs i
    [[ "$n" =~ ^[0-9]+$ ]] || die "N must be a non-negative integer, got '$n'"
    command -v "$RAY_BIN" > /dev/null || die "'$RAY_BIN' not found; activate the venv or set RAY_BIN"
    command -v setsid > /dev/null || die "setsid (util-linux) is required"
    absolute_state_dir
    make_token
    gcs="$(gcs_port || true)"
    if node_running head && [[ -n "$gcs" ]] && port_answers "$gcs"; then
        echo "head already running"
    else
        # A stale or half-started cluster: clear it before a fresh start.
        local name
        for name in $(known_nodes); do stop_node "$name" > /dev/null; done
        start_head
        gcs="$(gcs_port)"
    fi
    for ((i = 1; i <= n; i++)); do
        if node_running "worker-$i"; then
            echo "worker-$i already running"
        else
            start_worker "worker-$i" "$gcs"
        fi
    done
    print_client_env
}

cmd_stop() {
    absolute_state_dir
    local name any=0
    for name in $(known_nodes); do
        stop_node "$name"
        any=1
    done
    [[ $any == 1 ]] || echo "nothing to stop"
    rm -f "$PORTS_FILE" "$ENV_FILE"
    rmdir "$(temp_root)" 2>/dev/null || true
}

cmd_status() {
    absolute_state_dir
    local name head_up=3 gcs
    for name in $(known_nodes); do
        if node_running "$name"; then
            echo "$name: running ($(node_pids "$name" | wc -l) processes)"
        else
            echo "$name: not running"
        fi
    done
    gcs="$(gcs_port || true)"
    if node_running head && [[ -n "$gcs" ]] && port_answers "$gcs"; then
        head_up=0
        print_client_env
    else
        echo "no head running for state dir $STATE_DIR"
    fi
    return $head_up
}

cmd_env() {
    absolute_state_dir
    [[ -f "$ENV_FILE" ]] || die "no cluster started from $STATE_DIR"
    cat "$ENV_FILE"
}

case "${1:-}" in
    start) shift; [[ $# -le 1 ]] || die "start takes at most one argument (N)"; cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
