#!/usr/bin/env bash
# The GPU part of the suite on one GPU, in a few minutes; installs nothing. Run from anywhere:
#     OUT=/some/dir scripts/gpu_check.sh          (PYTHON=python by default; results under $OUT, else ./out)
#     DEVICE=cpu OUT=/tmp/rehearsal scripts/gpu_check.sh   rehearses every step on CPU (plumbing, reports, table)
#     PROFILE=quick SHAPES=small AREA=dtypes,ops ...       a shorter run (AREA: --area for the suite and torchrun
#                                                          steps, exact area names; tests/test_gpu_check.py does
#                                                          this on CPU)
#     WORKERS=8 STEPS=suite,torchrun ...                   pytest-xdist workers for the suite; which steps run
#     COMPILE=eager COMPILE_AREA=compile ...               the compiled step's backend (default inductor) and
#                                                          areas (default compile,models)
# Steps (each under `timeout`, each one's exit code in the summary at the end):
#   1. the conformance suite on the device, default profile (python -m harness run: cases/test_catalogue.py with
#      module, op and model cases, the TF32 model case on CUDA, and cases/test_property.py) -> gpu.json, gpu.html,
#      suite.log
#   2. harness.launch under torchrun, 2 processes sharing the GPU over gloo, quick profile -> torchrun.json/.html
#   3. the measured error table per dtype (SyncBN and single-process BatchNorm vs float64, and the suite's verdict
#      on SyncBN's grad_weight / grad_bias) -> error_table.md / .json
#   4. the compiled lane: the compile area (every recompile class once) and the model cases under torch.compile
#      with inductor (Triton kernels on CUDA; TF32 off, as for eager), quick profile -> compiled.json / .html
# The summary prints each step's status, the outcomes per case kind and the TF32 state the runs recorded (the harness
# switches TF32 off in every process; only the _tf32 model case turns it on for itself, harness/tf32.py).
# Exit code: 0 when every step passed, else the first failing step's code.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-default}
SHAPES=${SHAPES:-small,big}
AREA=${AREA:-}
WORKERS=${WORKERS:-}
STEPS=${STEPS:-suite,torchrun,errortable,compiled}
COMPILE=${COMPILE:-inductor}
COMPILE_AREA=${COMPILE_AREA:-compile,models}
OUT_DIR=${OUT:-out}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SUMMARY=()
FIRST_FAIL=0
START=$(date +%s)

step() {  # step NAME TIMEOUT_S LOGFILE COMMAND...
    local name=$1 limit=$2 log=$3
    shift 3
    case ",$STEPS," in *",$name,"*) ;; *) echo "=== $name: skipped (STEPS=$STEPS)"; return ;; esac
    local t0=$(date +%s)
    echo "=== $name (timeout ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$log" 2>&1
    local rc=$?
    tail -n 15 "$OUT_DIR/$log"
    local status=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="TIMED OUT"; elif [ $rc -ne 0 ]; then status="FAILED"; fi
    SUMMARY+=("$(printf '%-12s %-9s rc=%-3s %4ss  %s' "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" "$OUT_DIR/$log")")
    if [ $rc -ne 0 ] && [ $FIRST_FAIL -eq 0 ]; then FIRST_FAIL=$rc; fi
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; } > "$OUT_DIR/env.txt" 2>&1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'gpus', torch.cuda.device_count())" >> "$OUT_DIR/env.txt" 2>&1
$PY -c "from harness.tf32 import tf32_state; print('tf32 (torch default, before the harness sets it):', tf32_state())" >> "$OUT_DIR/env.txt" 2>&1
echo "harness $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ' (dirty)')" >> "$OUT_DIR/env.txt"
cat "$OUT_DIR/env.txt"

step suite 360 suite.log $PY -m harness run --device "$DEVICE" --profile "$PROFILE" --json "$OUT_DIR/gpu.json" \
    --report "$OUT_DIR/gpu.html" ${AREA:+--area "$AREA"} ${WORKERS:+-n "$WORKERS"} -- -rfEsx
step torchrun 80 torchrun.log $PY -m torch.distributed.run --standalone --nproc-per-node=2 -m harness.launch \
    --device "$DEVICE" --profile quick ${AREA:+--area "$AREA"} --json "$OUT_DIR/torchrun.json" \
    --report "$OUT_DIR/torchrun.html"
step errortable 90 errortable.log $PY scripts/gpu_error_table.py --device "$DEVICE" --shapes "$SHAPES" --out "$OUT_DIR"
step compiled 300 compiled.log $PY -m harness run --device "$DEVICE" --profile quick --compile "$COMPILE" \
    --area "$COMPILE_AREA" --json "$OUT_DIR/compiled.json" --report "$OUT_DIR/compiled.html" \
    ${WORKERS:+-n "$WORKERS"} -- -rfEsx

echo
echo "=== summary ($(( $(date +%s) - START ))s, results in $OUT_DIR)"
cat "$OUT_DIR/env.txt"
printf '%s\n' "${SUMMARY[@]}"
grep -E "passed|failed|skipped|xfailed" "$OUT_DIR/suite.log" | tail -n 1 | sed 's/^/suite:    /'
$PY - "$OUT_DIR" <<'PY'
import collections, json, os, sys
for name in ("gpu.json", "torchrun.json", "compiled.json"):
    path = os.path.join(sys.argv[1], name)
    if not os.path.exists(path):
        print(f"{name}: not written")
        continue
    doc = json.load(open(path))
    env = doc["environment"]
    tf32 = env.get("tf32") or {}
    words = ", ".join(f"{k} {v}" for k, v in tf32.items() if k != "api") or "not recorded"
    print(f"{name}: TF32 {words} ({tf32.get('api', '?')} API); {env.get('device_name') or 'cpu'}, "
          f"torch {env.get('torch')}, harness {str(env.get('harness_revision'))[:12]}")
    by_kind = collections.defaultdict(collections.Counter)
    for case in doc["cases"]:
        by_kind[case.get("kind") or case.get("level")][case["outcome"]] += 1
    for kind, counts in sorted(by_kind.items()):
        print(f"  {kind:7s} " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))
    for case in doc["cases"]:
        if case["id"].endswith("_tf32"):
            print(f"  TF32 case {case['id']}: {case['outcome']}")
    if env.get("compile", "off") != "off":
        from harness.compile_report import summary_lines
        for line in summary_lines(doc)[:8]:
            print(f"  --compile {env['compile']}: {line}")
PY
grep -E "^harness.launch:" "$OUT_DIR/torchrun.log" | tail -n 1 | sed 's/^/torchrun: /'
[ -f "$OUT_DIR/error_table.md" ] && cat "$OUT_DIR/error_table.md"
exit $FIRST_FAIL
