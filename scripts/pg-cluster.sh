#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: 127.0.0.1 only, a free port, a generated password.
#
#   eval "$(bash scripts/pg-cluster.sh start)"   # exports ORK_TEST_PG and ORK_TEST_PG_DIR
#   bash scripts/pg-cluster.sh stop "$ORK_TEST_PG_DIR"
#
# `start` makes a temporary folder (data directory and unix sockets inside it), runs initdb
# and starts the server; `stop` stops exactly that server, by its data directory, and removes
# the folder. As root (CI), the cluster belongs to the `postgres` user, since initdb refuses
# root; if the server binaries are missing, root installs Debian's `postgresql` package
# without letting it create or start a cluster of its own. PG_BIN overrides where the binaries are;
# ORK_PG_OPTIONS adds server options (`-c fsync=on` for a benchmark that pays for durable commits).
set -euo pipefail

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local dir
  for dir in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    if [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  done
}

install_server() {
  [ "$(id -u)" = 0 ] || { echo "pg-cluster: no PostgreSQL server binaries (initdb); install Debian's postgresql package" >&2; exit 1; }
  mkdir -p /etc/postgresql-common
  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
    || echo "create_main_cluster = false" >> /etc/postgresql-common/createcluster.conf
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq -o Dpkg::Options::=--force-confold postgresql >&2
}

as_owner() {  # run a command as the cluster's owner
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

fail() {  # a cluster that failed half-way is not left behind
  cat "$1" >&2 || true
  stop "$dir"
  exit 1
}

start() {
  local bin port password
  bin=$(find_bin)
  if [ -z "$bin" ]; then install_server; bin=$(find_bin); fi
  # not $TMPDIR: as root it may lie under a folder the postgres user cannot enter
  dir=$(mktemp -d "${ORK_PG_TMP:-/tmp}/ork-pg.XXXXXX")
  chmod 700 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  printf '%s\n' "$password" > "$dir/pwfile"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/pwfile"
  as_owner "$bin/initdb" -D "$dir/data" -U ork --pwfile="$dir/pwfile" -A scram-sha-256 --auth-local=trust \
    -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || fail "$dir/initdb.log"
  rm -f "$dir/pwfile"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # fsync off: a throwaway cluster for tests (a crash of ork is what the tests kill, not of PostgreSQL)
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200 ${ORK_PG_OPTIONS:-}" start >/dev/null \
    || fail "$dir/server.log"
  echo "export ORK_TEST_PG_DIR='$dir'"
  echo "export ORK_TEST_PG='postgresql://ork:$password@127.0.0.1:$port/postgres'"
}

stop() {
  local dir=${1:-} bin
  [ -n "$dir" ] || return 0  # nothing was started
  bin=$(find_bin)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" stop -m fast -w >/dev/null || true
  fi
  case "$dir" in
    */ork-pg.*) rm -rf "$dir" ;;
  esac
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
