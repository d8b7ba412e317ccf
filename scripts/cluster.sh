#!/usr/bin/env bash
# Brings ordermq's production topology up on one machine, as separate
# processes of the one `ordermq` binary:
#   - 2 RocketMQ NameServers   (`ordermq namesrv`)
#   - 2 RocketMQ brokers       (`ordermq broker`, broker-a and broker-b of
#                               cluster OrdermqCluster, both masters)
#   - PostgreSQL               (scripts/start-postgres.sh: database ordermq_cluster
#                               for the order service, ordermq_<system> for each system)
#   - 3 order instances        (`ordermq serve`, role order, sharing the order
#                               database, the cluster and one event key)
#   - 4 downstream systems     (`ordermq serve`, roles credit, marketing, push,
#                               warehouse, each on its own database)
# and prints every address. Pids and logs live under the data directory.
#
# Usage:
#   scripts/cluster.sh up [--mq-only]   start (--mq-only: NameServers and brokers only)
#   scripts/cluster.sh status           what runs, with its address
#   scripts/cluster.sh down             SIGTERM every process (each finishes, then
#                                       leaves; brokers unregister), then waits
#
# Environment:
#   CLUSTER_DIR   data directory (default /tmp/ordermq-cluster)
#   CLUSTER_BIN           the binary (default: target/debug/ordermq, built if missing;
#                         CARGO_TARGET_DIR is honoured)
#   CLUSTER_NAMESRV_PORTS default "29876 29877"
#   CLUSTER_BROKER_PORTS  default "30911 31911" (each broker also binds port-2 and port+1)
#   CLUSTER_HTTP_PORTS    default "18081 18082 18083" (the order instances)
#   CLUSTER_SYSTEM_PORTS  default "18091 18092 18093 18094" (credit, marketing, push,
#                         warehouse: GET /api/users/{id} answers that system's records)
#   CLUSTER_CONFIG        an ordermq.toml every instance and system reads (ORDERMQ_CONFIG),
#                         e.g. limits and fake latencies for a benchmark; the addresses,
#                         databases and roles above still come from this script
# Everything binds 127.0.0.1. For real hosts see README "In production".
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dir=${CLUSTER_DIR:-/tmp/ordermq-cluster}
read -r -a ns_ports <<<"${CLUSTER_NAMESRV_PORTS:-29876 29877}"
read -r -a broker_ports <<<"${CLUSTER_BROKER_PORTS:-30911 31911}"
read -r -a http_ports <<<"${CLUSTER_HTTP_PORTS:-18081 18082 18083}"
read -r -a system_ports <<<"${CLUSTER_SYSTEM_PORTS:-18091 18092 18093 18094}"
systems=(credit marketing push warehouse)
brokers=(broker-a broker-b)
cluster_name=OrdermqCluster

namesrv_addr() {
  local list=() port
  for port in "${ns_ports[@]}"; do list+=("127.0.0.1:$port"); done
  (IFS=';'; echo "${list[*]}")
}

binary() {
  if [[ -n ${CLUSTER_BIN:-} ]]; then echo "$CLUSTER_BIN"; return; fi
  local target=${CARGO_TARGET_DIR:-$here/target}
  if [[ ! -x $target/debug/ordermq ]]; then
    (cd "$here" && cargo build -q -p ordermq --bin ordermq) >&2
  fi
  echo "$target/debug/ordermq"
}

# alive NAME: whether the process recorded as NAME runs.
alive() {
  local pid
  [[ -f $dir/$1.pid ]] && pid=$(cat "$dir/$1.pid") && kill -0 "$pid" 2>/dev/null
}

# start NAME ENV... -- ARGS...: runs the binary in the background, once.
start() {
  local name=$1; shift
  local env=()
  while [[ $1 != -- ]]; do env+=("$1"); shift; done
  shift
  if alive "$name"; then echo "$name already running (pid $(cat "$dir/$name.pid"))"; return; fi
  # ordermq refuses unknown ORDERMQ_* variables: start from a clean slate.
  # CLUSTER_CONFIG, if given, is the one file they all read.
  if [[ -n ${CLUSTER_CONFIG:-} ]]; then env+=("ORDERMQ_CONFIG=$(realpath "$CLUSTER_CONFIG")"); fi
  env -u ORDERMQ_CONFIG $(env | grep -o '^ORDERMQ_[A-Z_]*' | sed 's/^/-u /') \
    NO_COLOR=1 "${env[@]}" "$bin" "$@" >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# wait_log NAME TEXT: until the log of NAME has TEXT (60 s), or it died.
wait_log() {
  local i
  for i in $(seq 600); do
    grep -q "$2" "$dir/$1.log" 2>/dev/null && return 0
    alive "$1" || { echo "$1 exited; end of $dir/$1.log:" >&2; tail -n 20 "$dir/$1.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$1 did not log '$2' within 60 s; see $dir/$1.log" >&2
  exit 1
}

up() {
  local mq_only=${1:-}
  bin=$(binary)
  mkdir -p "$dir"
  local ns i
  ns=$(namesrv_addr)
  for i in "${!ns_ports[@]}"; do
    start "namesrv-$((i + 1))" ORDERMQ_DATA_DIR="$dir/namesrv" -- namesrv --listen "127.0.0.1:${ns_ports[$i]}"
  done
  for i in "${!ns_ports[@]}"; do wait_log "namesrv-$((i + 1))" "NameServer running"; done
  for i in "${!brokers[@]}"; do
    start "${brokers[$i]}" ORDERMQ_DATA_DIR="$dir/${brokers[$i]}" ORDERMQ_BROKER_CLUSTER=$cluster_name \
      ORDERMQ_BROKER_NAME="${brokers[$i]}" ORDERMQ_EMBEDDED_BROKER_PORT="${broker_ports[$i]}" \
      ORDERMQ_BROKER_NAMESRV_ADDR="$ns" -- broker
  done
  for b in "${brokers[@]}"; do wait_log "$b" "broker registered"; done
  if [[ $mq_only != --mq-only ]]; then
    # One database and one event key for every instance.
    local pg_env db
    pg_env=$(CI=true "$here/scripts/start-postgres.sh")
    db=$(sed -n 's/^export ORDERMQ_TEST_POSTGRES_URL=//p' <<<"$pg_env")
    create_database "$db" ordermq_cluster
    for sys in "${systems[@]}"; do create_database "$db" "ordermq_$sys"; done
    [[ -f $dir/event.key ]] || (umask 077; echo "cluster:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$dir/event.key")
    for i in "${!http_ports[@]}"; do
      start "order-$((i + 1))" ORDERMQ_ROLE=order ORDERMQ_DATA_DIR="$dir/order-$((i + 1))" \
        ORDERMQ_HTTP_ADDR="127.0.0.1:${http_ports[$i]}" ORDERMQ_NAMESRV_ADDR="$ns" \
        ORDERMQ_DATABASE_URL="${db%/*}/ordermq_cluster" ORDERMQ_EVENT_KEYS="$(cat "$dir/event.key")" \
        ORDERMQ_DATABASE_ALLOW_UNSAFE_DURABILITY=true -- serve
      # One at a time: the first creates the tables.
      wait_log "order-$((i + 1))" "ordermq serving on"
    done
    # Each system: its own process and database (the order instances
    # learn their progress from their receipts).
    for i in "${!systems[@]}"; do
      sys=${systems[$i]}
      start "$sys" ORDERMQ_ROLE="$sys" ORDERMQ_DATA_DIR="$dir/$sys" \
        ORDERMQ_HTTP_ADDR="127.0.0.1:${system_ports[$i]}" ORDERMQ_NAMESRV_ADDR="$ns" \
        "ORDERMQ_${sys^^}_DATABASE_URL=${db%/*}/ordermq_$sys" ORDERMQ_EVENT_KEYS="$(cat "$dir/event.key")" \
        ORDERMQ_DATABASE_URL="${db%/*}/ordermq_cluster" \
        ORDERMQ_DATABASE_ALLOW_UNSAFE_DURABILITY=true -- serve
    done
    for sys in "${systems[@]}"; do wait_log "$sys" "ordermq serving on"; done
  fi
  status
}

# create_database URL NAME: creates database NAME on the server of URL, once.
create_database() {
  local psql
  psql=$(ls /usr/lib/postgresql/*/bin/psql | head -n 1)
  local port=${1##*:}; port=${port%%/*}
  local as=()
  [[ $(id -u) -eq 0 ]] && as=(runuser -u postgres --)
  if ! "${as[@]}" "$psql" -h 127.0.0.1 -p "$port" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$2'" | grep -q 1; then
    "${as[@]}" "$psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE $2" >/dev/null
  fi
}

status() {
  local ns i state
  ns=$(namesrv_addr)
  row() { if alive "$1"; then state="up (pid $(cat "$dir/$1.pid"))"; else state=down; fi
          printf '%-10s %-22s %-18s %s\n' "$1" "$2" "$state" "$dir/$1.log"; }
  printf '%-10s %-22s %-18s %s\n' process address state log
  for i in "${!ns_ports[@]}"; do row "namesrv-$((i + 1))" "127.0.0.1:${ns_ports[$i]}"; done
  for i in "${!brokers[@]}"; do row "${brokers[$i]}" "127.0.0.1:${broker_ports[$i]}"; done
  for i in "${!http_ports[@]}"; do
    [[ -f $dir/order-$((i + 1)).pid ]] && row "order-$((i + 1))" "http://127.0.0.1:${http_ports[$i]}"
  done
  for i in "${!systems[@]}"; do
    [[ -f $dir/${systems[$i]}.pid ]] && row "${systems[$i]}" "http://127.0.0.1:${system_ports[$i]}"
  done
  echo
  echo "ORDERMQ_NAMESRV_ADDR='$ns'  (cluster $cluster_name)"
}

down() {
  local name pid names=()
  # Instances first (they finish what they hold), then brokers, then NameServers.
  for name in order-3 order-2 order-1 credit marketing push warehouse broker-b broker-a namesrv-2 namesrv-1; do
    alive "$name" || continue
    kill -TERM "$(cat "$dir/$name.pid")"
    names+=("$name")
  done
  for name in "${names[@]}"; do
    pid=$(cat "$dir/$name.pid")
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$name (pid $pid) still running after 30 s; left alone" >&2
    else
      rm -f "$dir/$name.pid"
      echo "$name stopped"
    fi
  done
}

case ${1:-} in
  up) up "${2:-}" ;;
  status) status ;;
  down) down ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
