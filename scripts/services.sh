#!/usr/bin/env bash
# Make PostgreSQL (127.0.0.1:5432, user postgres, no password) and Redis (127.0.0.1:6379) answer,
# starting them when they do not. Idempotent: does nothing when both already answer.
#   scripts/services.sh [postgres] [redis]     (default: both)
set -euo pipefail

# The SERVICES_* overrides exist to try this script against a scratch cluster and port.
PG_HOST=127.0.0.1
PG_PORT=${SERVICES_PG_PORT:-5432}
PG_CLUSTER=${SERVICES_PG_CLUSTER:-main}
REDIS_PORT=${SERVICES_REDIS_PORT:-6379}
TEST_DATABASE=talkforge # the database named in talkforge/settings/test.py
WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-60}

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

wait_until() { # wait_until "what" command...
  local what=$1 deadline=$((SECONDS + WAIT_SECONDS))
  shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "$what did not answer within ${WAIT_SECONDS} s." >&2
      return 1
    fi
    sleep 0.5
  done
}

pg_answers() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
pg_trusts() { psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -w -d postgres -Atqc "select 1" >/dev/null 2>&1; }

postgres_up() {
  if ! command -v pg_isready >/dev/null; then
    echo "PostgreSQL is not installed: run make install." >&2
    return 1
  fi
  local version conf_dir
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  conf_dir=/etc/postgresql/$version/$PG_CLUSTER
  if pg_answers && pg_trusts; then
    ensure_test_database
    return 0
  fi
  if [[ -z $version || ! -f $conf_dir/pg_hba.conf ]]; then
    if pg_answers; then
      echo "PostgreSQL on $PG_HOST:$PG_PORT refuses user postgres without a password, and its" \
        "configuration is not under /etc/postgresql: allow 'host all all $PG_HOST/32 trust'." >&2
    else
      echo "No PostgreSQL cluster under /etc/postgresql: reinstall the postgresql package." >&2
    fi
    return 1
  fi
  local port
  port=$(sed -n 's/^[[:space:]]*port[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' "$conf_dir/postgresql.conf")
  if [[ -n $port && $port != "$PG_PORT" ]]; then
    echo "The PostgreSQL $version cluster listens on port $port, the tests expect $PG_PORT:" \
      "set port = $PG_PORT in $conf_dir/postgresql.conf." >&2
    return 1
  fi
  # First match wins in pg_hba.conf: put the trust lines for loopback TCP above Debian's defaults.
  # Only loopback is trusted; the default `listen_addresses = 'localhost'` keeps the port off the network.
  local marker="# talkforge: trust loopback TCP (scripts/services.sh)"
  if ! grep -qF "$marker" "$conf_dir/pg_hba.conf"; then
    echo "Allowing passwordless connections from loopback in $conf_dir/pg_hba.conf"
    local updated
    updated=$(mktemp)
    {
      echo "$marker"
      echo "host    all    all    127.0.0.1/32    trust"
      echo "host    all    all    ::1/128         trust"
      cat "$conf_dir/pg_hba.conf"
    } >"$updated"
    as_root cp "$updated" "$conf_dir/pg_hba.conf"
    rm -f "$updated"
    as_root chown postgres:postgres "$conf_dir/pg_hba.conf"
    as_root chmod 640 "$conf_dir/pg_hba.conf"
  fi
  if pg_answers; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" reload
  else
    echo "Starting PostgreSQL $version"
    as_root mkdir -p /var/run/postgresql
    as_root chown postgres:postgres /var/run/postgresql
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start
  fi
  wait_until "PostgreSQL on $PG_HOST:$PG_PORT" pg_answers
  wait_until "PostgreSQL (user postgres without a password)" pg_trusts
  ensure_test_database
}

ensure_test_database() {
  # Not strictly needed (pytest-django makes test_talkforge), but `makemigrations --check` reads the
  # migration history from this database and warns when it is missing.
  local exists
  exists=$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -w -d postgres -Atqc \
    "select 1 from pg_database where datname = '$TEST_DATABASE'")
  if [[ $exists != 1 ]]; then
    createdb -h "$PG_HOST" -p "$PG_PORT" -U postgres -w "$TEST_DATABASE"
  fi
}

redis_answers() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_up() {
  if ! command -v redis-server >/dev/null; then
    echo "Redis is not installed: run make install." >&2
    return 1
  fi
  redis_answers && return 0
  echo "Starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  if id redis >/dev/null 2>&1; then
    as_root chown redis:redis /var/lib/redis
    as_root chown redis:adm /var/log/redis 2>/dev/null || as_root chown redis:redis /var/log/redis
  fi
  # No persistence: PostgreSQL is the source of truth; the reconciler re-enqueues what Redis loses.
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_until "Redis on 127.0.0.1:$REDIS_PORT" redis_answers
}

wanted=("$@")
[[ ${#wanted[@]} -eq 0 ]] && wanted=(postgres redis)
for service in "${wanted[@]}"; do
  case $service in
    postgres) postgres_up ;;
    redis) redis_up ;;
    *)
      echo "Unknown service $service: use postgres and/or redis." >&2
      exit 2
      ;;
  esac
done
