# Sourced by dev/webui-e2e.sh and dev/webui-e2e-sdxl.sh (after the harness's env.sh): install this repository's
# committed branch into the harness the way the Extensions tab does, and check webui's log.
#   install_committed HARNESS REPO NAME     sets EXT to the installed folder
#   log_check WHEN [ALLOWED]                 no traceback, and no error line that mentions us (lines matching the
#                                            extended regex ALLOWED excepted), in webui's log

install_committed() {
  local h="$1" repo="$2" name="$3" branch
  branch="$(git -C "$repo" rev-parse --abbrev-ref HEAD)"
  if ! git -C "$repo" diff --quiet HEAD -- . ':!dev/*.sh'; then
    echo "note: uncommitted changes in $repo are not tested: the harness clones the committed branch $branch"
  fi
  echo "== install $repo ($branch, $(git -C "$repo" rev-parse --short HEAD)) as the Extensions tab does"
  "$h/stop.sh" >/dev/null || true
  "$h/install_ext.sh" "$repo" --name "$name" --branch "$branch" --force
  EXT="$h/webui/extensions/$name"
  [ "$(git -C "$EXT" rev-parse HEAD)" = "$(git -C "$repo" rev-parse HEAD)" ] || { echo "FAIL: not the committed HEAD"; exit 1; }
}

log_check() {
  local bad allowed="${2:-^$}"
  bad=$(grep -n -i -E "traceback|error" "$WEBUI_LOG" | grep -v -E "fatal: not a git repository" \
    | grep -v -E "$allowed" || true)
  if [ -n "$bad" ]; then
    echo "webui log lines with 'error' or 'traceback' ($1):"; echo "$bad" | head -40
    if echo "$bad" | grep -q -i -E "traceback|hypernet"; then
      echo "FAIL: webui log ($1) has a traceback or an error from us"; return 1
    fi
  fi
  echo "PASS webui log ($1): no traceback, no error from us"
}
