#!/usr/bin/env bash
# On the lent GPU machine (no network), from the repository root, in back-to-back calls (see benchmarks/gpu_run/README.md):
#   call 1:  bash benchmarks/gpu_run/on_gpu.sh stash            (carry .gpu-run/bundle/call1)
#   call 2+: bash benchmarks/gpu_run/on_gpu.sh run SECONDS      (carry the rest of .gpu-run; SECONDS < the call's limit)
# Everything lives in $W outside the repository, so it survives between calls while the machine stays warm.
# `run` installs the bundle and runs the probe once, then gpu-check --resume until SECONDS have passed, and
# copies at most 8 files to $OUT (the device tool's limit).
set -uo pipefail
W=${W:-/root/sam3trt-gpu-run}
OUT=${OUT:-$W/out}
mkdir -p "$W" "$OUT"
start=$(date +%s)
case "${1:-}" in
stash)
  cp -a .gpu-run/bundle/call1 "$W/" && ls -l "$W/call1"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$OUT/nvidia-smi.csv"
  exit 0
  ;;
run) budget=${2:?seconds}
  ;;
*) echo "usage: on_gpu.sh stash | run SECONDS" >&2; exit 2 ;;
esac
say() { echo "[on_gpu $(( $(date +%s) - start ))s] $*"; }
if [ ! -f "$W/installed" ]; then
  [ -d "$W/call1" ] || { echo "error: $W/call1 missing: run 'on_gpu.sh stash' with .gpu-run/bundle/call1 first" >&2; exit 2; }
  cp -a .gpu-run/bundle/call2 .gpu-run/bundle/bundle.json .gpu-run/bundle/unbundle.py "$W/" || exit 2
  [ -f .gpu-run/probe_rtx.py ] && cp .gpu-run/probe_rtx.py "$W/"
  say "installing the bundle"
  python3 "$W/unbundle.py" "$W/site" "$W/call1" "$W/call2" || exit 2
  touch "$W/installed"
fi
export PYTHONPATH="$W/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cc=current
if [ -f "$W/probe_rtx.py" ]; then
  if [ ! -f "$W/probe_rtx.json" ]; then
    say "TensorRT for RTX probe"
    timeout 180 python3 "$W/probe_rtx.py" "$W/probe_rtx.json" 2>&1 | tail -3
  fi
  # the first compute-capability setting whose FP16 probe engine ran (gpu-check takes current or smXY)
  cc=$(python3 -c "
import json, sys
s = json.load(open('$W/probe_rtx.json'))['stages']
for c in ('CURRENT', 'SM80', 'SM86', 'SM89', 'SM120'):
    if s.get('fp16_' + c, {}).get('ok'):
        print(c.lower()); break
else:
    print('current')" 2>/dev/null || echo current)
fi
left=$(( budget - ($(date +%s) - start) - 20 ))
say "gpu-check (rtx cc $cc, deadline ${left}s)"
python3 -m sam3_trt.cli gpu-check --out "$W/report" --resume --deadline "$left" --rtx-cc "$cc" 2>&1 \
  | tee -a "$W/gpu-check.log"
rc=${PIPESTATUS[0]}
say "gpu-check exit $rc"
R="$W/report"
for f in "$R/gpu-check.json" "$R/summary.md" "$W/probe_rtx.json" "$W/gpu-check.log" "$R/bench-full.json" \
  "$R/bench-full.png" "$R/parity-full-fp16-default.png" "$R/parity-tiny-fp16.png"; do
  [ -f "$f" ] && cp "$f" "$OUT/"
done
cat "$R/summary.md"
exit "$rc"
