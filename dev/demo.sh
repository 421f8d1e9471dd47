#!/usr/bin/env bash
# The main job on its embedded default: installs the users' stack if needed, then runs the demo training.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(bash dev/venv.sh users)
PYTHONPATH="$PWD" "$venv/bin/python" -m hypernet_ext demo "$@"
