#!/usr/bin/env bash
# Makes sure a lane's virtual environment is installed and prints its path.
#   users    .venv/          torch 2.1.2 + torchvision 0.16.2 (webui v1.10.1's stack)
#   current  .venv-current/  torch 2.13.0 CPU; tests add tests/shims for torchvision
# Rebuilt only when dev/requirements-*.txt, dev/constraints-users.txt or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."
lane="${1:-users}"
case "$lane" in
  users)   venv=.venv;         torch="torch==2.1.2 torchvision==0.16.2" ;;
  current) venv=.venv-current; torch="torch==2.13.0" ;;
  *) echo "lane must be users or current, not '$lane'" >&2; exit 2 ;;
esac
stamp="$venv/.stack-$(cat dev/requirements-*.txt dev/constraints-users.txt dev/venv.sh | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "== installing the $lane stack into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade "pip<25" wheel >&2
  cons="$venv/constraints.txt"
  if [ "$lane" = users ]; then cp dev/constraints-users.txt "$cons"; else echo "torch==2.13.0" > "$cons"; fi
  # torch first and pinned: anything unpinned pulls a multi-GB CUDA build of the newest torch
  "$venv/bin/python" -m pip install -q $torch >&2
  "$venv/bin/python" -m pip install -q -c "$cons" -r dev/requirements-test.txt >&2
  if [ "$lane" = current ]; then "$venv/bin/python" -m pip install -q -c "$cons" -r dev/requirements-current.txt >&2; fi
  # their own pins would replace torch: no dependencies (see shared/TEST-STACK.md)
  "$venv/bin/python" -m pip install -q --no-deps stable-diffusion-sdkit==2.1.5 open-clip-torch==2.20.0 >&2
  "$venv/bin/python" -c "import torch; print('installed torch', torch.__version__)" >&2
  touch "$stamp"
fi
echo "$venv"
