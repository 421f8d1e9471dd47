#!/usr/bin/env bash
# SDXL end to end in a real webui v1.10.1 (the harness of ../shared/webui-harness/, with sgm, Stability-AI's
# generative-models at 45c443b, under webui/repositories/): build a tiny SDXL checkpoint with sgm's own classes
# (dev/build_tiny_sdxl.py; once, into webui's models folder), install this repository's committed branch the way
# the Extensions tab does, start webui on that checkpoint, run dev/webui_e2e_sdxl.py (widths, fit checks, train,
# resume, txt2img with and without <hypernet:...>) and check webui's log.
#
#   bash dev/webui-e2e-sdxl.sh HARNESS_DIR [--keep]      (WEBUI_PORT defaults to 7863; --keep leaves it installed)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 HARNESS_DIR [--keep]" >&2; exit 2; }
H="$(cd "$1" && pwd)"; shift
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export WEBUI_PORT="${WEBUI_PORT:-7863}"
# shellcheck disable=SC1091
source "$H/env.sh"
NAME=hypernet_ext
# shellcheck disable=SC1091
source "$REPO/dev/e2e_common.sh"

CKPT="$H/webui/models/Stable-diffusion/tiny-sdxl.safetensors"
if [ ! -f "$CKPT" ] || [ ! -f "${CKPT%.safetensors}.yaml" ]; then
  echo "== build the tiny SDXL with sgm's classes"
  "$H/venv/bin/python" "$REPO/dev/build_tiny_sdxl.py" --harness "$H" 2>"$H/run/build_tiny_sdxl.log"
fi

install_committed "$H" "$REPO" "$NAME"

cleanup() {
  "$H/stop.sh" >/dev/null || true
  if [ "$KEEP" = 0 ]; then rm -rf "$EXT"; echo "removed $EXT"; fi
}
trap cleanup EXIT

ALLOWED="'e2e_sd1' .*made for SD1"   # the refusal the check asks for

echo "== start webui on port $WEBUI_PORT with $CKPT"
"$H/start.sh" --ckpt "$CKPT"
log_check "start-up"
grep -E "Model loaded|Creating model from config|Applying attention optimization" "$WEBUI_LOG" | tail -3 || true

RC=0
"$H/venv/bin/python" "$REPO/dev/webui_e2e_sdxl.py" --url "$WEBUI_URL" --webui "$H/webui" \
  --data "$H/data/hypernet_ext_e2e_sdxl" || RC=$?
log_check "after the run" "$ALLOWED" || RC=1
exit "$RC"
