#!/bin/sh
# Entry point of every Talkforge container: refuse the example's placeholder secret, apply migrations
# when TALKFORGE_MIGRATE=true (the web service only, so two containers never migrate at once), then run
# the command.
set -eu

case "${SECRET_KEY:-}" in
  "" | *change-me*)
    echo "SECRET_KEY is unset or still the placeholder from docker/.env.example: put a long random" \
      "string in docker/.env (python3 -c 'import secrets; print(secrets.token_urlsafe(50))')." >&2
    exit 78
    ;;
esac

if [ "${TALKFORGE_MIGRATE:-false}" = "true" ]; then
  python manage.py migrate --noinput
fi

exec "$@"
