#!/usr/bin/env bash
# bench/gpu_check.sh -- the whole GPU path of mini-alchemist checked by one command, in at most 8 minutes, on one
# CUDA GPU. Without CUDA it says so in one line and exits 0.
#
# Run:  bash bench/gpu_check.sh [DEST] [--parts abc] [--cpu-smoke]          (DEST default: gpu_check_out)
#   (a) the test suite with CUDA visible: tests/test_gpu.py (--device cuda, bf16 autocast, the exact method's double
#       backward, --compile, ablate.py's workers sharing the GPU) and every other test file, 4 pytest processes at once
#       -> DEST/a_tests/*.log
#   (b) bench/train_speed.py: training images/s and TFLOP/s beside the GPU's bf16 peak, for the proxy and target
#       paper presets (the paper grid's models), eager, in 4 and 8 processes at once, then --compile
#       -> DEST/b_speed/speed.log, speed.json
#   (c) ablate.py --preset paper cut to one seed and a few methods (GPU_CHECK_METHODS), its wall time and results
#       -> DEST/c_grid/grid.log, results/ (results.md, results.csv, ...), gpu_util.csv (nvidia-smi every 2 s), and
#          its working folder GPU_CHECK_RUNS (default DEST/c_grid/runs: data and models, tens of MB)
#   DEST/summary.txt: the machine, each part's status and time, and its figures (printed at the end too).
# Each part runs under its own timeout (GPU_CHECK_T_A=140, GPU_CHECK_T_B=150, GPU_CHECK_T_C=180 seconds) and no part
# runs past the budget (GPU_CHECK_BUDGET=470 s from the start), so one slow part cannot eat the others' time. A part
# cut short keeps its log; run again with the same DEST (e.g. --parts c), part (c) resumes where it stopped.
# --cpu-smoke: exercise the script itself on the CPU in seconds (for CI): (a) tests/test_gpu.py only (it skips),
# (b) one step of tiny batches, (c) skipped.
# Exit status: 0 when every part it ran passed (or no CUDA), 1 when one failed or timed out, 2 for a bad flag or no
# torch.
set -uo pipefail

DEST=gpu_check_out PARTS=abc SMOKE=
while (($#)); do
  case $1 in
    --cpu-smoke) SMOKE=1 ;;
    --parts) PARTS=${2-}; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: gpu_check.sh: unknown flag $1; see bash bench/gpu_check.sh --help" >&2; exit 2 ;;
    *) DEST=$1 ;;
  esac
  shift || true
done
if [[ ! $PARTS =~ ^[abc]+$ ]]; then
  echo "error: gpu_check.sh: --parts takes letters of abc (e.g. --parts c), not '$PARTS'" >&2
  exit 2
fi
[[ $DEST = /* ]] || DEST=$PWD/$DEST
RUNS=${GPU_CHECK_RUNS:-$DEST/c_grid/runs}
[[ $RUNS = /* ]] || RUNS=$PWD/$RUNS
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python}
METHODS=${GPU_CHECK_METHODS:-full,random_50,alchemist_shift_gsample_50,alchemist_shift_gsample_20}
BUDGET=${GPU_CHECK_BUDGET:-470}

torch=$($PY -c 'import torch; print(f"torch {torch.__version__} CUDA {torch.version.cuda}", end="|")
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null)
if (($? != 0)); then
  echo "gpu_check: $PY cannot import torch; nothing checked (install requirements.txt)"
  exit 2
fi
gpu=${torch#*|} torch=${torch%%|*}
if [[ -z $gpu && -z $SMOKE ]]; then
  echo "gpu_check: no CUDA device visible to PyTorch here, nothing to check (--cpu-smoke runs the script on the CPU)"
  exit 0
fi

mkdir -p "$DEST"
SUMMARY=$DEST/summary.txt FAILED=0
note() { echo "$*" | tee -a "$SUMMARY"; }

# part NAME LIMIT LOG CMD...: CMD under min(LIMIT, what is left of the budget), all its output to LOG; notes the status
part() {
  local name=$1 limit=$2 log=$3 left=$((BUDGET - SECONDS)) t=$SECONDS rc status
  shift 3
  if ((left < 5)); then
    note "$name: SKIPPED (the ${BUDGET} s budget is spent)"
    FAILED=1
    return 1
  fi
  ((limit > left)) && limit=$left
  timeout -k 10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  if ((rc == 0)); then status=passed; elif ((rc == 124 || rc == 137)); then status="TIMED OUT at its ${limit} s"
  else status="FAILED (exit $rc)"; fi
  ((rc == 0)) || FAILED=1
  note "$name: $status after $((SECONDS - t)) s; log ${log#"$DEST"/}"
  ((rc == 0)) || tr '\r' '\n' <"$log" | grep -v '^ *$' | tail -n 4 | sed 's/^/      | /' | tee -a "$SUMMARY"
  return $rc
}

part_a() {  # the suite in 4 pytest processes at once: the GPU tests alone, the other files dealt round-robin to 3
  local out=$DEST/a_tests groups=("tests/test_gpu.py" "" "" "") i=0 f pids=() rc=0
  mkdir -p "$out"
  rm -f "$out"/pytest*.log  # a second run reports its own logs only
  if [[ -z $SMOKE ]]; then
    for f in tests/test_*.py; do
      [[ $f = tests/test_gpu.py ]] && continue
      groups[1 + i % 3]+=" $f"
      i=$((i + 1))
    done
  fi
  for i in "${!groups[@]}"; do
    [[ -n ${groups[$i]} ]] || continue
    # shellcheck disable=SC2086  # the group is a list of files
    $PY -m pytest -q -rs -p no:cacheprovider --basetemp="$out/tmp$i" ${groups[$i]} >"$out/pytest$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || rc=1; done
  ((rc)) || rm -rf "$out"/tmp*  # the tests' files, kept only when one failed
  return $rc
}

{
  echo "gpu_check $(date '+%Y-%m-%d %H:%M:%S') on $(hostname): ${gpu:-no GPU (--cpu-smoke)}; $(getconf _NPROCESSORS_ONLN) CPUs;" \
    "$torch; commit" \
    "$(git rev-parse --short HEAD 2>/dev/null)$(git status --porcelain 2>/dev/null | grep -q . && echo ' (uncommitted changes)')"
} >"$SUMMARY"
cat "$SUMMARY"
command -v nvidia-smi >/dev/null && nvidia-smi >"$DEST/nvidia-smi.txt" 2>&1

if [[ $PARTS = *a* ]]; then
  export -f part_a
  export PY DEST SMOKE
  part "(a) tests" "${GPU_CHECK_T_A:-140}" "$DEST/a_tests.log" bash -c part_a
  for f in "$DEST"/a_tests/pytest*.log; do
    [[ -f $f ]] && note "    ${f##*/}: $(tail -n 1 "$f")" && grep -E '^(FAILED|ERROR) ' "$f" | sed 's/^/      /' | tee -a "$SUMMARY"
  done
fi

if [[ $PARTS = *b* ]]; then
  mkdir -p "$DEST/b_speed"
  if [[ -n $SMOKE ]]; then
    speed=(--device cpu --configs proxy:quick --batch-size 2 --steps 1 --warmup 1 --processes 2)
  else
    speed=(--device cuda --processes 4,8 --compile --budget $((${GPU_CHECK_T_B:-150} - 60)))
  fi
  part "(b) training throughput" "${GPU_CHECK_T_B:-150}" "$DEST/b_speed/speed.log" \
    $PY bench/train_speed.py "${speed[@]}" --json "$DEST/b_speed/speed.json"
  grep -E '^(speed|note|failed):' "$DEST/b_speed/speed.log" 2>/dev/null | sed 's/^/    /' | tee -a "$SUMMARY"
fi

if [[ $PARTS = *c* && -n $SMOKE ]]; then
  note "(c) paper grid: skipped (--cpu-smoke)"
elif [[ $PARTS = *c* ]]; then
  mkdir -p "$DEST/c_grid"
  util=
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 >"$DEST/c_grid/gpu_util.csv" 2>&1 &
    util=$!
  fi
  part "(c) paper grid, seed 0, $METHODS" "${GPU_CHECK_T_C:-180}" "$DEST/c_grid/grid.log" \
    $PY ablate.py --preset paper --seeds 1 --methods "$METHODS" --runs "$RUNS" --out "$DEST/c_grid/results" --device cuda
  [[ -n $util ]] && kill "$util" 2>/dev/null
  done_runs=$(find "$RUNS/train" -name metrics.json 2>/dev/null | wc -l)
  note "    $done_runs of $(tr ',' '\n' <<<"$METHODS" | wc -l) runs evaluated; grid wall time over all invocations:" \
    "$($PY -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["seconds"]), "s")' "$RUNS/wall_seconds.json" 2>/dev/null || echo "not finished")"
  [[ -f $DEST/c_grid/results/results.csv ]] && note "    per run, training + evaluation seconds: $($PY -c '
import csv, sys
out = []
for r in csv.DictReader(open(sys.argv[1])):
    m, keep, seed, train, ev = (r[k] for k in "method keep seed train_seconds eval_seconds".split())
    out.append(f"{m} {float(keep):.0%} seed {seed}: {float(train):.0f} + {float(ev):.0f}")
print("; ".join(out))' "$DEST/c_grid/results/results.csv")"
  [[ -f $DEST/c_grid/gpu_util.csv ]] && note "    mean GPU utilisation during (c):" \
    "$(awk -F', ' 'NR > 1 { s += $2; n++ } END { print (n ? int(s / n) "% over " n " samples" : "n/a") }' "$DEST/c_grid/gpu_util.csv")"
  [[ -f $DEST/c_grid/results/results.md ]] && sed -n '/^## All figures/,/^## What each selection/p' \
    "$DEST/c_grid/results/results.md" | sed '$d; s/^/    /' | tee -a "$SUMMARY"
fi

note "gpu_check: $( ((FAILED)) && echo "SOME PARTS FAILED OR TIMED OUT" || echo "every part passed") in $SECONDS s; see $SUMMARY"
exit $FAILED
