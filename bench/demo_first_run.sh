#!/usr/bin/env bash
# Benchmark of the main job's first run: `bash dev/demo.sh` on a fresh clone of HEAD (no venv, an empty model
# cache), as a new user runs it. Run by hand: `bash bench/demo_first_run.sh`. Prints the install stages, the
# install and total times, and the total as a fraction of the 2-minute budget (issue 6: under 2 min, with margin).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
start=$(date +%s.%N)
HYPERNET_EXT_CACHE="$work/model-cache" bash dev/demo.sh --out "$work/out" >"$work/demo.out" 2>&1
end=$(date +%s.%N)
grep '^demo:' "$work/demo.out"
python3 -c "t = $end - $start; print(f'first run: {t:.0f} s, {t / 120:.2f} of the 2-minute budget')"
