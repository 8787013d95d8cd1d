#!/bin/sh
# Entry point of every Talkforge container: refuse the example files' placeholder secrets, apply
# migrations when TALKFORGE_MIGRATE=true (the web service only, so two containers never migrate at once),
# then run the command.
set -eu

case "${SECRET_KEY:-}" in
  "" | *change-me*)
    echo "SECRET_KEY is unset or still the placeholder from docker/.env.example: put a long random" \
      "string in docker/.env (python3 -c 'import secrets; print(secrets.token_urlsafe(50))')." >&2
    exit 78
    ;;
esac

# The other secrets of the example files (docker/.env.example, docker/gpu-machine.env.example): a
# placeholder left in any of them refuses the start (they may be empty where a container does not use them).
for name in POSTGRES_PASSWORD DATABASE_URL REDIS_PASSWORD REDIS_URL MINIO_ROOT_PASSWORD \
  AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY NODE_SECRETS_KEY; do
  value=$(printenv "$name" || true)
  case "$value" in
    *change-me*)
      echo "$name still holds a change-me placeholder from the example file: replace it in the .env" \
        "file (python3 -c 'import secrets; print(secrets.token_hex(24))'), the same value everywhere it" \
        "appears." >&2
      exit 78
      ;;
  esac
done

if [ "${TALKFORGE_MIGRATE:-false}" = "true" ]; then
  python manage.py migrate --noinput
fi

exec "$@"
