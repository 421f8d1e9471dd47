#!/usr/bin/env bash
# Installs the test stack into a virtual environment and runs the tests.
#   LANE=users   (default) .venv/         torch 2.1.2 + torchvision 0.16.2: what webui v1.10.1 users run
#   LANE=current           .venv-current/ torch 2.13.0 (CPU) + a test-only torchvision stand-in
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
LANE="${LANE:-users}"
case "$LANE" in
  users)   VENV=.venv;         TORCH="torch==2.1.2 torchvision==0.16.2" ;;
  current) VENV=.venv-current; TORCH="torch==2.13.0" ;;
  *) echo "LANE must be 'users' or 'current', not '$LANE'" >&2; exit 2 ;;
esac
PY="$VENV/bin/python"
stamp="$VENV/.stack-$(cat dev/requirements-test.txt dev/constraints-users.txt dev/test.sh | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade "pip<25" wheel
  CONS="$VENV/constraints.txt"
  if [ "$LANE" = users ]; then cp dev/constraints-users.txt "$CONS"; else echo "torch==2.13.0" > "$CONS"; fi
  "$PY" -m pip install -q $TORCH
  "$PY" -m pip install -q -c "$CONS" -r dev/requirements-test.txt
  # Their own pins would replace torch: install without dependencies (see shared/TEST-STACK.md).
  "$PY" -m pip install -q --no-deps stable-diffusion-sdkit==2.1.5 open-clip-torch==2.20.0
  "$PY" -c "import torch, sys; print('torch', torch.__version__); sys.exit(0)"
  touch "$stamp"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$LANE" = current ]; then export PYTHONPATH="$PWD/tests/shims:$PYTHONPATH"; fi
exec "$PY" -m pytest "$@"
