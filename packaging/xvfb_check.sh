#!/usr/bin/env bash
# Start the built bundle under Xvfb: print its first-paint time (`studio gui --smoke`, measured
# from process creation, three times: the first is a cold start) and take a screenshot of
# its window on the demo project.
#   packaging/xvfb_check.sh [SCREENSHOT.png]     (default /tmp/bundle-shot.png)
# Needs Xvfb, xdotool and ImageMagick's `import` (apt install xvfb xdotool imagemagick).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
app="$root/dist/studio/studio"
shot="${1:-/tmp/bundle-shot.png}"
display=":${STUDIO_XVFB_DISPLAY:-97}"
tmp="$(mktemp -d)"

Xvfb "$display" -screen 0 1400x900x24 -nolisten tcp &
xvfb=$!
cleanup() {
    [ -n "${app_pid:-}" ] && kill "$app_pid" 2>/dev/null || true
    kill "$xvfb" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
export DISPLAY="$display" STUDIO_HOME="$tmp/home"
sleep 1

for run in 1 2 3; do
    echo "xvfb_check: run $run: $("$app" gui --smoke)"
done

start=$(date +%s.%N)
"$app" >"$tmp/app.log" 2>&1 &
app_pid=$!
xdotool search --sync --onlyvisible --name "Studio" >/dev/null
echo "xvfb_check: window mapped after $(echo "$(date +%s.%N) - $start" | bc) s (xdotool)"
sleep 8  # the demo project fills in after the first paint
import -window root "$shot"
echo "xvfb_check: screenshot $shot"
kill "$app_pid"
wait "$app_pid" 2>/dev/null || true
app_pid=
