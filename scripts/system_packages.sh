#!/usr/bin/env bash
# Install the Debian packages Talkforge and its tests need, only those that are missing.
# Fast when everything is there: one `dpkg -s` per package, no apt-get at all.
set -euo pipefail

PACKAGES=(
  python3-venv     # make install creates .venv
  ffmpeg           # video in and out of the engines
  openssh-server   # the tests' SSH node on loopback
  openssh-client
  espeak-ng        # chat TTS fallback when XTTS weights are absent
  chromium         # browser tests (Playwright drives /usr/bin/chromium)
  postgresql       # the source of truth (tests and production)
  redis-server     # RQ queues and live events
)

missing=()
for package in "${PACKAGES[@]}"; do
  # `dpkg -s` also lists removed packages whose config is left: require "install ok installed".
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "Installing Debian packages: ${missing[*]}"
sudo=()
if [[ $EUID -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "Missing packages (${missing[*]}) and not root: install them as root, then run make again." >&2
    exit 1
  fi
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
