#!/usr/bin/env bash
# Starts a throwaway MariaDB server on 127.0.0.1 for the store tests and
# prints the URL to export as ORDERMQ_TEST_MYSQL_URL.
#
# Installs Debian's mariadb-server package when no server binaries are found.
# The server runs with --no-defaults: started with Debian's configuration
# files it has crashed at start on small machines, and the tests want a
# server whose settings are all on its command line. Commits are durable
# (innodb_flush_log_at_trx_commit=1, the default, stated anyway).
# Usage: eval "$(scripts/start-mariadb.sh)"   (idempotent; port via MYSQL_PORT, default 33069)
set -euo pipefail

port=${MYSQL_PORT:-33069}
root=${ORDERMQ_MARIADB_DIR:-/tmp/ordermq-mariadb}
data=$root/data
sock=$root/s.sock

find_bin() {
  local name
  for name in mariadbd mysqld; do
    for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
      [[ -x $dir/$name ]] && { echo "$dir/$name"; return 0; }
    done
  done
  return 1
}

if ! server=$(find_bin) || ! command -v mariadb-install-db >/dev/null 2>&1; then
  echo "installing MariaDB from Debian packages..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # The package's post-install script tries to start a server (there is no
  # init system here): let it fail without failing the install.
  apt-get install -y -qq mariadb-server mariadb-client >&2 || dpkg --configure -a >&2 || true
  server=$(find_bin)
fi

client() {
  local bin
  bin=$(command -v mariadb || command -v mysql)
  "$bin" --no-defaults --protocol=socket --socket="$sock" -uroot "$@"
}

alive() { [[ -S $sock ]] && client -e 'SELECT 1' >/dev/null 2>&1; }

if ! alive; then
  mkdir -p "$root"
  if [[ ! -d $data/mysql ]]; then
    rm -rf "$data"
    mariadb-install-db --no-defaults --datadir="$data" --user="$(id -un)" \
      --auth-root-authentication-method=normal >"$root/install.log" 2>&1
  fi
  # setsid: the server outlives this script and the shell that ran it.
  setsid "$server" --no-defaults --datadir="$data" --user="$(id -un)" \
    --port="$port" --bind-address=127.0.0.1 --socket="$sock" \
    --pid-file="$root/server.pid" --log-error="$root/server.log" \
    --innodb-flush-log-at-trx-commit=1 --max-connections=300 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_bin \
    </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 300); do
    alive && break
    sleep 0.1
  done
  alive || { echo "MariaDB did not start; see $root/server.log" >&2; tail -20 "$root/server.log" >&2; exit 1; }
fi
# The tests connect over TCP as root without a password, to a database of their own.
client -e "CREATE DATABASE IF NOT EXISTS ordermq CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; \
  CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; \
  GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" >&2
echo "export ORDERMQ_TEST_MYSQL_URL=mysql://root@127.0.0.1:$port/ordermq"
