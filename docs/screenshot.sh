#!/usr/bin/env bash
# Render a widthscan report in headless Chromium and save docs/report-screenshot.png.
#
#   docs/screenshot.sh [SWEEP_DIR] [OUT_PNG] [HEIGHT]
#
# SWEEP_DIR defaults to ./widthscan-demo when it exists (the output of `widthscan demo`),
# else the synthetic Dataset of tests/report/report_data.py (every section present).
# The report itself is written to a temporary directory, which is printed.
# Needs chromium (Debian: apt-get install -y chromium) and Pillow (a matplotlib dependency).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$(command -v /work/venv/bin/python || command -v python3)}
SWEEP=${1:-$ROOT/widthscan-demo}
PNG=${2:-$ROOT/docs/report-screenshot.png}
HEIGHT=${3:-4000}
WORK=$(mktemp -d)
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT

PYTHONPATH="$ROOT/src:$ROOT/tests/report${PYTHONPATH:+:$PYTHONPATH}" \
"$PY" - "$SWEEP" "$WORK/report.html" <<'PYEOF'
import os
import sys

import widthscan.report
import widthscan.store

sweep, out = sys.argv[1], sys.argv[2]
if os.path.isdir(sweep):
    ds = widthscan.store.load(sweep)
    print(f"report of {sweep}")
else:
    from report_data import synthetic_dataset

    ds = synthetic_dataset(attention=True, targets=True)
    print("report of the synthetic dataset (tests/report/report_data.py)")
print(widthscan.report.report(ds, out))
PYEOF

chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$PROFILE" --screenshot="$WORK/full.png" \
  --window-size=1400,"$HEIGHT" "file://$WORK/report.html" 2>/dev/null

# Keep the PNG under 1.5 MB: lossless if it fits, else a 256-colour palette (fine for plots).
"$PY" - "$WORK/full.png" "$PNG" <<'PYEOF'
import os
import sys

from PIL import Image

src, dst = sys.argv[1], sys.argv[2]
img = Image.open(src).convert("RGB")
img.save(dst, optimize=True)
if os.path.getsize(dst) > 1_400_000:
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        dst, optimize=True)
print(dst, img.size)
PYEOF
ls -l "$PNG"
