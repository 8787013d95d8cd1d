#!/bin/sh
# The web tier as production runs it: gunicorn supervising WEB_CONCURRENCY uvicorn workers (default one
# per core), each serving HTTP and websockets (talkforge/asgi.py) on its own event loop with its own
# database pool. Used by the Docker image, `make serve`, bench/api_load.py and tests/talkforge/test_serving.py.
#   kill -HUP <master>    graceful restart: new workers start with the new code, old ones stop taking
#                         connections, finish their requests (up to WEB_GRACEFUL_TIMEOUT seconds) and
#                         close their websockets (browsers reconnect)
#   kill -TERM <master>   graceful stop (what `docker stop` sends); kill -TTIN / -TTOU: a worker more / fewer
set -eu

workers="${WEB_CONCURRENCY:-}"
if [ -z "$workers" ]; then
  workers="$(nproc 2>/dev/null || echo 2)"
fi

# Access lines cost CPU on every request; the proxy in front logs them already. WEB_ACCESS_LOG=- prints them.
if [ -n "${WEB_ACCESS_LOG:-}" ]; then
  set -- --access-logfile "$WEB_ACCESS_LOG"
else
  set --
fi

exec "${PYTHON:-python}" -m gunicorn talkforge.asgi:application \
  --worker-class talkforge.serving.TalkforgeUvicornWorker \
  --workers "$workers" \
  --bind "${WEB_BIND:-0.0.0.0:8000}" \
  --graceful-timeout "${WEB_GRACEFUL_TIMEOUT:-30}" \
  --keep-alive "${WEB_KEEPALIVE:-5}" \
  --backlog 2048 \
  --error-logfile - \
  "$@"
