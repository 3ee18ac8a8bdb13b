#!/usr/bin/env bash
# Installs each pinned framework of the compatibility matrix into its own venv under build/compat/
# (their pins conflict with each other and with rtsim's own), and the pinned npm clients under compat/node.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ROOT=build/compat
mkdir -p "$ROOT"
install_venv() {  # name, pip requirements...
  local name=$1; shift
  local venv=$ROOT/$name
  local stamp=$venv/.installed
  local want="$*"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  echo "compat: installing $name: $want"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "$@"
  echo "$want" > "$stamp"
}
# The official Python SDK drives rtsim's own built-in client (rtsim.clients.openai_sdk), so rtsim goes in too.
install_venv openai-python -e . 'openai[realtime]==3.57.0'
install_venv openai-agents 'openai-agents==0.24.0'
install_venv pipecat 'pipecat-ai[openai]==1.14.0'
install_venv livekit 'livekit-agents==1.8.9' 'livekit-plugins-openai==1.8.9'
# npm ci installs exactly the lockfile (the pins in compat/node/package.json); node_modules stays out of git.
if [ ! -d compat/node/node_modules ] || [ compat/node/package-lock.json -nt compat/node/node_modules ]; then
  (cd compat/node && npm ci --no-audit --no-fund --loglevel=error) && touch compat/node/node_modules
fi
echo "compat: installed"
