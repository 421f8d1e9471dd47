#!/usr/bin/env bash
# Installs the test stack into virtual environments at the repository root and runs the tests.
#   LANE=users    .venv/          torch 2.1.2 + torchvision 0.16.2: what webui v1.10.1 users run
#   LANE=current  .venv-current/  torch 2.13.0 (CPU) + a test-only torchvision stand-in (tests/shims)
#   LANE=all      (default) both, users first
# Extra arguments go to pytest. dev/venv.sh builds each lane's venv (only when its requirements change).
set -euo pipefail
cd "$(dirname "$0")/.."
LANE="${LANE:-all}"

setup_lane() { bash dev/venv.sh "$1"; }

run_lane() {  # $1 = lane, rest = pytest args
  local lane=$1; shift
  local venv
  venv=$(setup_lane "$lane")
  local path="$PWD"
  if [ "$lane" = current ]; then path="$PWD/tests/shims:$PWD"; fi
  echo "== $lane lane: $("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)')"
  PYTHONPATH="$path" "$venv/bin/python" -m pytest "$@"
}

case "$LANE" in
  users|current) run_lane "$LANE" "$@" ;;
  all)
    venv=$(setup_lane users)
    "$venv/bin/ruff" check hypernet_ext tests bench scripts install.py
    run_lane users "$@"
    run_lane current "$@"
    ;;
  *) echo "LANE must be users, current or all, not '$LANE'" >&2; exit 2 ;;
esac
