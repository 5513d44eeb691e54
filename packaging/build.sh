#!/usr/bin/env bash
# Build the one-folder bundle dist/studio/ with PyInstaller, then run its self-test.
#   packaging/build.sh            # from anywhere; uses the active Python (a venv with Studio)
#   STUDIO_BUNDLE_ALL_MODELS=1 packaging/build.sh   # every transformers model family
# Prints the build time and the bundle size; exits non-zero when the build or the frozen
# self-test fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python}"

if ! "$python" -c "import PyInstaller" 2>/dev/null; then
    echo "build.sh: installing PyInstaller"
    "$python" -m pip install --quiet "pyinstaller>=6.10"
fi

start=$(date +%s)
"$python" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$root/dist" --workpath "$root/build" packaging/studio.spec
took=$(( $(date +%s) - start ))

bundle="$root/dist/studio"
echo "build.sh: built $bundle in $((took / 60)) min $((took % 60)) s"
echo "build.sh: bundle size $(du -sh "$bundle" | cut -f1) ($(find "$bundle" -type f | wc -l) files)"

cli="$bundle/studio-cli"
[ -x "$cli.exe" ] && cli="$cli.exe"
echo "build.sh: $cli --selftest"
# A private home and temporary folder: the self-test must not need (or touch) the user's.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! STUDIO_HOME="$tmp/home" TMPDIR="$tmp" "$cli" --selftest; then
    echo "build.sh: the frozen self-test FAILED" >&2
    exit 1
fi
echo "build.sh: frozen self-test passed"
