#!/usr/bin/env bash
# The main job on its embedded default: installs what the demo needs (first run only), then runs the demo training.
#   .venv-demo/  torch 2.13.0 (CPU build) + dev/demo-requirements.txt + ldm and open_clip, nothing else: the light
#                stack keeps a fresh clone's first run short. torchvision is the stand-in in tests/shims (the names
#                ldm and open_clip import). The tests run webui's own stack (dev/test.sh); this is only the demo.
# One line per install stage; pip's own output goes to .venv-demo/install.log. Arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-demo
stamp="$venv/.stack-$(cat dev/demo-requirements.txt dev/demo.sh | sha256sum | cut -c1-12)"
log="$venv/install.log"

stage() {  # $1 = label, rest = command; prints "label ... N s" or the end of the log on failure
  local label=$1 start=$SECONDS
  shift
  printf 'demo: %s ... ' "$label"
  if "$@" >>"$log" 2>&1; then
    echo "$((SECONDS - start)) s"
  else
    echo "failed"
    echo "demo: the last lines of $log:" >&2
    tail -n 25 "$log" >&2
    exit 1
  fi
}

pip() { "$venv/bin/python" -m pip install --no-compile --disable-pip-version-check "$@"; }

if [ ! -f "$stamp" ]; then
  begin=$SECONDS
  echo "demo: first run: installing the demo's packages into $venv/ (about a minute; details in $log)"
  rm -rf "$venv"
  mkdir -p "$venv"
  : >"$log"
  stage "[1/4] virtual environment" python3 -m venv "$venv"
  # torch first and pinned: anything unpinned pulls a multi-GB CUDA build of the newest torch
  stage "[2/4] torch 2.13.0 (CPU build)" pip torch==2.13.0 "setuptools<81"
  echo "torch==2.13.0" >"$venv/constraints.txt"
  stage "[3/4] transformers 4.30.2, omegaconf, numpy, pillow" \
    pip -c "$venv/constraints.txt" -r dev/demo-requirements.txt
  # no dependencies: sdkit's and open_clip's pins would replace torch (see shared/TEST-STACK.md), and
  # pytorch_lightning's would add aiohttp and six more packages the demo never imports
  stage "[4/4] ldm (stable-diffusion-sdkit 2.1.5), open_clip 2.20.0, pytorch_lightning 1.9.4" \
    pip --no-deps stable-diffusion-sdkit==2.1.5 open-clip-torch==2.20.0 pytorch_lightning==1.9.4 torchmetrics==0.11.4
  touch "$stamp"
  echo "demo: installed in $((SECONDS - begin)) s; now the demo"
fi
# One thread: the tiny model's operations are too small to share out, and on a busy 2-core machine two threads
# waiting on each other made a training step ten times slower (3.8 s against 0.39 s). OMP_NUM_THREADS set: kept.
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONPATH="$PWD/tests/shims:$PWD" "$venv/bin/python" -m hypernet_ext demo "$@"
