#!/usr/bin/env bash
# End-to-end check of the extension in a real webui v1.10.1 (the harness of ../shared/webui-harness/, built with
# its setup.sh): install this repository's committed branch the way the Extensions tab does, restart, check the
# log, then run dev/webui_e2e.py (create, train, snapshots, webui's own loader, interrupt and resume, txt2img
# with and without <hypernet:...>, speed against webui's native trainer) and dev/webui_ui_e2e.py (the Train tab's
# Create, Train and Compare sub-tabs in headless Chromium: ids and ui-config keys of our own against a start
# without the extension, create, train with a live plot and previews, interrupt, resume, a compare grid), and check
# the log again.
#
#   bash dev/webui-e2e.sh HARNESS_DIR [--keep]      (WEBUI_PORT defaults to 7861; --keep leaves it installed)
#   E2E_PARTS="api speed ui" (default): which parts run (speed: the training speed again in a freshly started webui,
#   ours first); E2E_SHOT=PNG: the Train sub-tab during the run
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 HARNESS_DIR [--keep]" >&2; exit 2; }
H="$(cd "$1" && pwd)"; shift
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export WEBUI_PORT="${WEBUI_PORT:-7861}"
# shellcheck disable=SC1091
source "$H/env.sh"
NAME=hypernet_ext
# shellcheck disable=SC1091
source "$REPO/dev/e2e_common.sh"

PARTS="${E2E_PARTS:-api speed ui}"
RUN="$H/run"
mkdir -p "$RUN"
if [[ " $PARTS " == *" ui "* ]]; then
  echo "== start webui without the extension: its own ui-config.json keys (the baseline of ours)"
  "$H/stop.sh" >/dev/null || true
  rm -rf "$H/webui/extensions/$NAME" "$RUN/ui-config-base.json" "$RUN/ui-config-ext.json"
  "$H/start.sh" --ui-config-file "$RUN/ui-config-base.json" >/dev/null
  "$H/stop.sh" >/dev/null
fi
install_committed "$H" "$REPO" "$NAME"

cleanup() {
  "$H/stop.sh" >/dev/null || true
  if [ "$KEEP" = 0 ]; then rm -rf "$EXT"; echo "removed $EXT"; fi
}
trap cleanup EXIT

echo "== start webui on port $WEBUI_PORT"
rm -f "$RUN/ui-config-ext.json"
"$H/start.sh" --ui-config-file "$RUN/ui-config-ext.json"
log_check "start-up"
grep -E "Applying attention optimization|Disabling attention optimization" "$WEBUI_LOG" | tail -1 || true

api_checks() {   # dev/webui_e2e.py against the running webui; extra arguments go to it
  "$H/venv/bin/python" "$REPO/dev/webui_e2e.py" --url "$WEBUI_URL" --webui "$H/webui" --data "$H/data/hypernet_ext_e2e" \
    --python "$H/venv/bin/python" --loader-check "$REPO/dev/webui_loader_check.py" --pid "$(cat "$WEBUI_PIDFILE")" "$@"
}

RC=0
if [[ " $PARTS " == *" api "* ]]; then
  api_checks || RC=1
fi
if [[ " $PARTS " == *" speed "* ]]; then
  echo "== training speed in a freshly started webui (ours first)"
  "$H/stop.sh" >/dev/null
  "$H/start.sh" --ui-config-file "$RUN/ui-config-ext.json" >/dev/null
  api_checks --speed-only || RC=1
fi
if [[ " $PARTS " == *" ui "* ]]; then
  echo "== the Train tab in headless Chromium"
  "$H/venv/bin/python" "$REPO/dev/webui_ui_e2e.py" --url "$WEBUI_URL" --webui "$H/webui" \
    --data "$H/data/hypernet_ext_e2e" --ui-config-base "$RUN/ui-config-base.json" \
    --ui-config "$RUN/ui-config-ext.json" ${E2E_SHOT:+--shot "$E2E_SHOT"} || RC=1
fi
log_check "after the run" || RC=1
exit "$RC"
