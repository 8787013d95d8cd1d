#!/usr/bin/env bash
# `make run`: the whole portal on this machine with embedded defaults, in the foreground.
#   web (daphne, HTTP + websockets) on http://127.0.0.1:${PORT:-8000}/, one RQ worker for the local
#   node, the housekeeping loop, and a Redis of its own when none answers on 127.0.0.1:6379.
# Settings talkforge.settings.dev: SQLite and media under ./var. Ctrl-C (or SIGTERM) stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
PORT=${PORT:-8000}
REDIS_PORT=${RUN_REDIS_PORT:-6379} # the settings' default Redis is 127.0.0.1:6379
STOP_GRACE=${STOP_GRACE:-30} # seconds the worker gets to finish its running job on Ctrl-C

export DJANGO_SETTINGS_MODULE=talkforge.settings.dev
export PYTHONUNBUFFERED=1
export TALKFORGE_VAR_DIR=${TALKFORGE_VAR_DIR:-$ROOT/var}
VAR=$TALKFORGE_VAR_DIR
mkdir -p "$VAR"

# A secret key made once per checkout, kept out of git (var/ is ignored).
if [[ ! -s $VAR/secret_key ]]; then
  (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$VAR/secret_key")
fi
SECRET_KEY=$(<"$VAR/secret_key")
export SECRET_KEY

if ! "$PY" -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' \
  "$PORT" 2>/dev/null; then
  echo "Port $PORT on 127.0.0.1 is taken: stop what uses it, or run PORT=8001 make run." >&2
  exit 1
fi

names=()    # name of each child, by index
pids=()     # pid of each child, by index
redis_pid=""

start() { # start NAME COMMAND...
  local name=$1
  shift
  "$@" &
  names+=("$name")
  pids+=("$!")
}

alive() { kill -0 "$1" 2>/dev/null; }

stop_requested=0
force=0
on_signal() {
  if ((stop_requested)); then force=1; else stop_requested=1; fi
}
trap on_signal INT TERM
# Never leave a child behind, whatever ends this script.
trap 'for pid in "${pids[@]}" $redis_pid; do kill -TERM "$pid" 2>/dev/null || true; done' EXIT
# A Ctrl-C also interrupts the `sleep` this script is in; `nap` keeps that from counting as a failure.
nap() { sleep "$1" || true; }

stop_all() {
  local pid i deadline began=$SECONDS waiting_said=0
  for pid in "${pids[@]}"; do
    alive "$pid" && { kill -TERM "$pid" 2>/dev/null || true; }
  done
  deadline=$((SECONDS + STOP_GRACE))
  while :; do
    local left=()
    for i in "${!pids[@]}"; do
      alive "${pids[$i]}" && left+=("$i")
    done
    ((${#left[@]} == 0)) && break
    if ((force)) || ((SECONDS >= deadline)); then
      # The worker takes a second TERM as "stop now" (RQ's cold shutdown); the rest get KILL after 3 s.
      for i in "${left[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
      nap 3
      for i in "${left[@]}"; do
        if alive "${pids[$i]}"; then
          echo "Killing ${names[$i]} (pid ${pids[$i]})." >&2
          kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
      done
      break
    fi
    if ((!waiting_said && SECONDS - began >= 2)); then
      waiting_said=1
      local waiting_for=()
      for i in "${left[@]}"; do waiting_for+=("${names[$i]}"); done
      echo "Waiting for ${waiting_for[*]} to stop (a worker first finishes its running job, at most" \
        "${STOP_GRACE} s); press Ctrl-C again to stop now." >&2
    fi
    nap 0.2
  done
  wait "${pids[@]}" 2>/dev/null || true
  if [[ -n $redis_pid ]] && alive "$redis_pid"; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
}

redis_answers() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

# A Redis of our own when the default one is not there (and REDIS_URL does not name another).
if [[ -z ${REDIS_URL:-} ]]; then
  export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
  if ! redis_answers; then
    echo "No Redis on 127.0.0.1:$REDIS_PORT: starting one for this run (nothing saved, log in $VAR/redis.log)."
    # In a session of its own, so a Ctrl-C in the terminal does not stop it before the worker is done
    # with it; it is stopped last.
    setsid redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$VAR" \
      --logfile "$VAR/redis.log" &
    redis_pid=$!
    for _ in $(seq 100); do
      redis_answers && break
      alive "$redis_pid" || break
      nap 0.1
    done
    if ! redis_answers; then
      echo "Redis did not start; see the lines above." >&2
      stop_all
      exit 1
    fi
  fi
fi

"$PY" manage.py migrate --noinput
"$PY" manage.py register_local_node --name local --workdir "$VAR/nodes/local"
"$PY" scripts/dev_admin.py "$VAR/admin_password"

start web "$PY" -m daphne -b 127.0.0.1 -p "$PORT" talkforge.asgi:application
start worker "$PY" manage.py worker
start housekeeping "$PY" manage.py housekeeping

# Say how to sign in once the web process answers, so it is the last thing on screen before the logs.
for _ in $(seq 300); do
  ((stop_requested)) && break
  if "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
    "$PORT" 2>/dev/null; then
    cat <<BANNER

  Talkforge is running: http://127.0.0.1:$PORT/
  Sign in as admin with password $(<"$VAR/admin_password")   (kept in $VAR/admin_password)
  Admin: http://127.0.0.1:$PORT/admin/   Ctrl-C stops everything.

BANNER
    break
  fi
  alive "${pids[0]}" || break
  nap 0.1
done

status=0
while ((!stop_requested)); do
  for i in "${!pids[@]}"; do
    if ! alive "${pids[$i]}"; then
      wait "${pids[$i]}" && code=0 || code=$?
      echo "${names[$i]} exited (status $code); stopping the others." >&2
      status=1
      stop_requested=1
      break
    fi
  done
  ((stop_requested)) || nap 0.5
done
echo "Stopping Talkforge…" >&2
stop_all
exit "$status"
