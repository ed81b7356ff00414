#!/usr/bin/env bash
# The GPU checks of the renderer in one run, for a machine with an NVIDIA GPU, nvcc and torch:
# build the CUDA (and C++) kernels, run the `cuda`-marked tests, run the compositing benchmark at
# three sizes (with nerfacc as a column when its wheel lies in .whl/) and the triplane benchmark,
# report `neural3d info`.
#
#     bash benchmarks/gpu_checks.sh            # logs and JSON under $OUT (default ./gpu_out)
#
# Runs from the repository root without installing the package (PYTHONPATH). Each step's output
# goes to its own log; a failing step is reported and the next one still runs.
set -u
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export NEURAL3D_BUILD_DIR=${NEURAL3D_BUILD_DIR:-/tmp/neural3d_build}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-16}
PY=${PY:-python3}

step() { echo "=== $1 ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step "builds (C++, CUDA, nerfacc in parallel)"
nerfacc_pid=
if compgen -G ".whl/nerfacc-*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/n3d_site .whl/nerfacc-*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/n3d_site"
    timeout 300 $PY -c "
import time; t = time.time()
from nerfacc.cuda._backend import _C
print('nerfacc CUDA extension:', _C, f'{time.time() - t:.0f} s')" >"$OUT/build_nerfacc.log" 2>&1 &
    nerfacc_pid=$!
fi
$PY -m neural3d.render.build --cpu >"$OUT/build_cpu.log" 2>&1 &
cpu_pid=$!
$PY -c "
import time; t = time.time()
from neural3d.render.build import load_cuda
m = load_cuda()
print('neural3d CUDA extension:', m.__file__, f'{time.time() - t:.0f} s')" 2>&1 | tee "$OUT/build_cuda.log"
wait $cpu_pid; tail -1 "$OUT/build_cpu.log"

step "neural3d info"
$PY -m neural3d.cli info 2>&1 | tee "$OUT/info.txt" | tail -25

step "cuda-marked tests"
$PY -m pytest -m cuda -q -p no:cacheprovider tests/test_render_composite.py tests/test_triplane_kernel.py \
    tests/test_cameras.py \
    2>&1 | tee "$OUT/pytest_cuda.log" | tail -30

nerfacc_flag=
if [ -n "$nerfacc_pid" ]; then
    wait $nerfacc_pid; rc=$?
    echo "nerfacc build exit $rc"; tail -3 "$OUT/build_nerfacc.log"
    [ $rc -eq 0 ] || nerfacc_flag=--no-nerfacc-packed  # a killed JIT build leaves its lock behind
fi

for rays in 4096 65536 524288; do
    step "bench_composite --device cuda --rays $rays"
    $PY benchmarks/bench_composite.py --device cuda --rays "$rays" --repeat 30 --json $nerfacc_flag \
        >"$OUT/bench_cuda_$rays.json" 2>"$OUT/bench_cuda_$rays.err" || tail -5 "$OUT/bench_cuda_$rays.err"
    $PY - "$OUT/bench_cuda_$rays.json" <<'EOF' || true
import json, sys
d = json.load(open(sys.argv[1]))
print("bandwidth", d["meta"]["bandwidth_gb_s"], "GB/s; notes:", d["meta"]["notes"])
for r in d["rows"]:
    print(f"{r['backend']:16s} {r['layout']:7s} fwd {r['fwd_ms']:8.3f} f+b {r['fwd_bwd_ms']:8.3f} ms "
          f"x{r['speedup_fwd_vs_torch']:6.2f} x{r['speedup_fwd_bwd_vs_torch']:6.2f} "
          f"BW {r['pct_bw_bound_fwd']:5.1f}% {r['pct_bw_bound_fwd_bwd']:5.1f}% "
          f"peak {r['bwd_peak_mb']} MB")
EOF
done
step "bench_triplane --device cuda (toy, fit, SSDNeRF paper sizes)"
$PY benchmarks/bench_triplane.py --device cuda --repeat 20 2>&1 | tee "$OUT/bench_triplane_cuda.txt"
$PY benchmarks/bench_triplane.py --device cuda --repeat 20 --json >"$OUT/bench_triplane_cuda.json" \
    2>"$OUT/bench_triplane_cuda.err" || tail -5 "$OUT/bench_triplane_cuda.err"
step "done"
