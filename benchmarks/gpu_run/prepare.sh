#!/usr/bin/env bash
# Prepare the lent-GPU run here (no GPU needed), into the git-ignored .gpu-run/ of the repository:
#   .gpu-run/bundle/       `sam3-trt bundle` for Python 3.12: call1/ (first transfer), call2/ + bundle.json + unbundle.py
#   .gpu-run/probe_rtx.py  ../shared/gpu-probe's TensorRT-for-RTX probe (when that folder is beside the repo)
# The tiny export (~64 MB) and its engines (~66 MB FP16) do not fit beside the bundle in two 64 MiB transfers: the
# machine exports the tiny model itself (stage b), and the probe's SM80..SM120 builds answer whether plans built for
# a listed architecture run on Hopper.
# Then follow benchmarks/gpu_run/README.md. Usage: bash benchmarks/gpu_run/prepare.sh  (BIN=.venv/bin by default;
# PY=3.11 makes a bundle for this machine's Python, to dry-run on_gpu.sh here)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
BIN=${BIN:-.venv/bin}
PY=${PY:-3.12}
grep -qx '/.gpu-run/' .git/info/exclude 2>/dev/null || echo '/.gpu-run/' >> .git/info/exclude
rm -rf .gpu-run && mkdir -p .gpu-run
"$BIN/sam3-trt" -q bundle --out .gpu-run/bundle --python "$PY" --part-mb 58 --call-mb 58 --force
if [ -f ../shared/gpu-probe/probe_rtx.py ]; then cp ../shared/gpu-probe/probe_rtx.py .gpu-run/; fi
# what each call carries: call 1 = bundle/call1; call 2 = the rest (each must stay under 64 MiB with the repo)
du -sh .gpu-run/bundle/call1
du -shc .gpu-run/bundle/call2 .gpu-run/bundle/*.json .gpu-run/bundle/*.py .gpu-run/probe_rtx.py 2>/dev/null | tail -1
