#!/usr/bin/env bash
# The one script run on a GPU machine: installs carried wheels, prints versions, runs the
# CUDA backend tests, the benchmarks, a compute-sanitizer memcheck pass over our kernels and
# the whole test suite (forced onto CUDA, then the normal CPU+CUDA run). Logs and results go
# to the directory given as the first argument.
#
# Usage: scripts/gpu_check.sh OUTDIR [TAG] [MODE]
#   TAG names the benchmark files (gpu_overhead_<TAG>.json/.md; default: h100).
#   MODE (third argument): tests, sanitize, bench or all (default).
#   GPU_CHECK_BUDGET=seconds (default 450) bounds the whole run: later steps get what is left.
#   GPU_CHECK_ONLY=a,b,... (bench mode) runs only those benchmarks (names as in the list below).
#   Wheels in .whl/*.whl (e.g. nvmath-python) are installed into /tmp/site first; those in
#   .whl/extra/ only if nvmath's cuBLASLt bindings do not import with the image's packages.
set -u
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR [TAG]}
TAG=${2:-h100}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$REPO"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-450}
SUMMARY="$OUT/summary.txt"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
: >"$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME MAX_SECONDS CMD...: run CMD with a timeout (at most what the budget has left)
step() {
    local name=$1 max=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then
        note "== $name: SKIPPED (budget spent)"
        return 0
    fi
    [ "$max" -gt "$left" ] && max=$left
    note "== $name (timeout ${max}s)"
    local t0=$(date +%s)
    timeout --kill-after=10 "$max" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    note "   rc=$rc in $(( $(date +%s) - t0 ))s; last lines:"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   | /' | tee -a "$SUMMARY"
}

# ---- carried wheels -----------------------------------------------------------------------
SITE=/tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl >>"$SUMMARY" 2>&1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    if ! $PY -c "import nvmath.bindings.cublasLt" >>"$SUMMARY" 2>&1 && ls .whl/extra/*.whl >/dev/null 2>&1; then
        note "nvmath did not import with the image's cuda-* packages: installing .whl/extra"
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/extra/*.whl >>"$SUMMARY" 2>&1
    fi
fi
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

# ---- versions -------------------------------------------------------------------------------
note "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
$PY - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import importlib, platform
print("python", platform.python_version())
for m in ("numpy", "ml_dtypes", "cupy", "torch", "nvmath", "cuda.bindings", "cuda.core",
          "pytest", "hypothesis"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "NOT AVAILABLE:", type(e).__name__, e)
import scitensor as st
print("scitensor", st.__version__, "cuda_status:", st.cuda_status())
EOF
command -v compute-sanitizer >/dev/null && note "compute-sanitizer: $(command -v compute-sanitizer)"

# ---- checks ---------------------------------------------------------------------------------
# MODE: tests (CUDA test suite + GPU self-checks), sanitize (compute-sanitizer passes),
# bench (every benchmark), all (the three)
MODE=${3:-all}
B="$OUT/bench"
mkdir -p "$B"
if [ "$MODE" = tests ] || [ "$MODE" = all ]; then
    export SCITENSOR_TEST_DEVICE=cuda
    step pytest_cuda 300 $PY -m pytest -p no:cacheprovider -q -r fE -n 8 --durations=10 \
        --junitxml="$OUT/pytest_cuda.xml" tests
    unset SCITENSOR_TEST_DEVICE
    # GPU self-checks of kernel families against float64 references (skipped if absent)
    for chk in check_attention_gpu check_linear_gpu check_conv_gpu; do
        [ -f "scripts/$chk.py" ] && step "$chk" 90 $PY "scripts/$chk.py"
    done
fi
if [ "$MODE" = sanitize ] || [ "$MODE" = all ]; then
    if command -v compute-sanitizer >/dev/null; then
        # every kernel we ship, on odd shapes, under the four sanitizer tools (issue 11 item 4):
        # elementwise/random/cuBLASLt (cuda_kernel_exercise), attention (check script --quick),
        # row kernels (norm_kernel_exercise) and the layer kernels (layer_kernel_exercise, its
        # sections split over the layers_* steps below). Each step writes the kernels it
        # launched to kernels/<tool>_<step>.txt; the last step checks that their union is every
        # extern "C" kernel of kernels/*.cu (scripts/kernel_inventory.py --coverage).
        # GPU_CHECK_TOOLS picks tools (default all four, in this order); GPU_CHECK_SECTIONS
        # picks steps by name (default all: elementwise,attention,rows and the layers_* names
        # of LAYER_STEPS); with a subset the coverage step only reports.
        CS="compute-sanitizer --report-api-errors no --error-exitcode 9"
        K="$OUT/kernels"
        mkdir -p "$K"
        rm -f "$K"/*.txt
        LX="$PY scripts/layer_kernel_exercise.py"
        LAYER_STEPS="layers_pool=pool,batchnorm,dropout,loss,embedding
            layers_conv=conv,depthwise,conv_transpose layers_igemm16=igemm16
            layers_igemm32=igemm32 layers_linear=linear,kmeans layers_optim=optim,scatter"
        ALL_SECTIONS=elementwise,attention,rows
        for ls in $LAYER_STEPS; do ALL_SECTIONS="$ALL_SECTIONS,${ls%%=*}"; done
        SECTIONS=${GPU_CHECK_SECTIONS:-$ALL_SECTIONS}
        sec() { case ",$SECTIONS," in *",$1,"*) return 0 ;; esac; return 1; }
        # compile the layer kernels (NVRTC, disk-cached) and check their values once, outside
        # the sanitizer, so the sanitizer steps spend their time on the kernels
        if [[ ",$SECTIONS," == *,layers_* ]]; then
            step layers_plain 240 $LX
        fi
        for tool in ${GPU_CHECK_TOOLS:-memcheck racecheck initcheck synccheck}; do
            sec elementwise && step "${tool}_elementwise" 100 $CS --tool $tool \
                $PY scripts/cuda_kernel_exercise.py --record "$K/${tool}_elementwise.txt"
            sec attention && step "${tool}_attention" 90 $CS --tool $tool \
                $PY scripts/check_attention_gpu.py --quick --record "$K/${tool}_attention.txt"
            sec rows && step "${tool}_rows" 80 $CS --tool $tool \
                $PY scripts/norm_kernel_exercise.py --record "$K/${tool}_rows.txt"
            for ls in $LAYER_STEPS; do
                name=${ls%%=*}
                sec "$name" && step "${tool}_$name" 90 $CS --tool $tool \
                    $LX --only "${ls#*=}" --record "$K/${tool}_$name.txt"
            done
        done
        REPORT_ONLY=""
        [ "$SECTIONS" = "$ALL_SECTIONS" ] || REPORT_ONLY=--report-only
        step kernel_coverage 60 $PY scripts/kernel_inventory.py $REPORT_ONLY \
            --coverage "$K"/*.txt
    fi
fi
if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
    ONLY=${GPU_CHECK_ONLY:-overhead,batching,norm,pooling_bn,linear,conv,cnn,attention,kmeans,gpt}
    want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }
    want overhead && step bench_overhead 80 $PY benchmarks/gpu_overhead.py --out "$B" --tag "$TAG"
    want overhead && step overhead_breakdown 60 $PY scripts/overhead_breakdown.py
    want batching && step bench_batching 90 $PY -m benchmarks.gpu_batching --out "$B" --tag "$TAG"
    want norm && step bench_norm 80 $PY -m benchmarks.gpu_norm_softmax --out "$B" --reps 30
    want pooling_bn && step bench_pooling_bn 90 $PY -m benchmarks.gpu_pooling_bn --out "$B" --reps 20
    for m in linear conv cnn kmeans gpt; do
        want $m && [ -f "benchmarks/gpu_$m.py" ] && step "bench_$m" 150 $PY -m "benchmarks.gpu_$m" --out "$B"
    done
    want attention && step bench_attention 150 $PY -m benchmarks.gpu_attention --out "$B" --reps 10
    if [ -f benchmarks/__main__.py ]; then
        step bench_report 60 $PY -m benchmarks --from-json "$B" --out "$OUT/report" --probe
    fi
fi
note "== total $(( $(date +%s) - START ))s"
