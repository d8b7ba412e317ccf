#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on 127.0.0.1 for the store tests and
# prints the URL to export as ORDERMQ_TEST_POSTGRES_URL.
#
# Installs Debian's postgresql package when no server binaries are found.
# Usage: eval "$(scripts/start-postgres.sh)"   (idempotent; port via PGPORT, default 54329)
set -euo pipefail

port=${PGPORT:-54329}
root=${ORDERMQ_PG_DIR:-/tmp/ordermq-postgres}

find_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/initdb ]] && { echo "$dir"; return 0; }
  done
  return 1
}

if ! bin=$(find_bin); then
  echo "installing PostgreSQL from Debian packages..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bin=$(find_bin)
fi

# PostgreSQL refuses to run as root: run it as the 'postgres' account when we are root.
run() {
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$root" postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if ! run "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
  mkdir -p "$root"
  [[ $(id -u) -eq 0 ]] && chown postgres "$root"
  if [[ ! -f $root/data/PG_VERSION ]]; then
    run "$bin/initdb" -D "$root/data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  run "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w \
    -o "-h 127.0.0.1 -p $port -k $root -c fsync=off -c max_connections=300" start >&2
fi
echo "export ORDERMQ_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres"
