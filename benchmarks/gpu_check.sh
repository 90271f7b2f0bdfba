#!/usr/bin/env bash
# dsmn on a GPU, verified and timed, in one run of at most 7 minutes. From the repository root:
#
#   OUT=/path/to/results bash benchmarks/gpu_check.sh
#
# Steps (each under `timeout`; a failing step is reported and the next one runs):
#   install   wheels of the missing dependencies from .whl/ into /tmp/site (no dsmn install: PYTHONPATH=src)
#   env       nvidia-smi, torch / CUDA / cuDNN / NCCL versions
#   tests     pytest -m cuda (every CUDA test of the suite), while the demo data is generated on the CPU cores
#   data      dsmn synth --size demo (all cores) + dsmn features
#   train     dsmn train model1 on CUDA: the recipe (configs/model1.yaml) and the demo config, then the same
#             two under torchrun --nproc_per_node 1 (NCCL, DDP) at once
#   speed     benchmarks/gpu_training_speed.py: clips/s at batch 32 and 256, faithful and faster variants,
#             before/after the GPU-wait fixes; then torch.compile against eager (same run)
#   best.pt   the recipe run's best checkpoint, for the int8 ONNX export check on a CPU afterwards
# Writes to $OUT: gpu_check.log (every step's output, trimmed), gpu_figures.md (status, training
# figures, throughput tables), pytest.log, best.pt.
#
# GPU_CHECK_DATA=DIR uses an existing dataset (with its feature cache) instead of generating one.
# GPU_CHECK_DEVICE=cpu runs the same steps on the CPU with tiny sizes (a check of this script).
# GPU_CHECK_BUDGET_S (default 410) bounds the whole run; GPU_CHECK_SKIP="tests train_more ..." skips
# steps by name (for a shorter rerun of what failed).
set -u
: "${OUT:?set OUT to the folder for logs and figures}"
mkdir -p "$OUT"
DEVICE=${GPU_CHECK_DEVICE:-cuda}
WORK=${GPU_CHECK_WORK:-/tmp/dsmn-gpu-check}
BUDGET=${GPU_CHECK_BUDGET_S:-410}  # seconds: the whole script stays inside 7 minutes
LOG=$OUT/gpu_check.log
FIG=$OUT/gpu_figures.md
START=$(date +%s)
rm -rf "$WORK" && mkdir -p "$WORK/bin" "$WORK/runs"
: > "$LOG"
STATUS=()

if [ "$DEVICE" = cpu ]; then  # dry run: tiny sizes
  SIZE=tiny; EPOCHS=1; DEMO_EPOCHS=1; TRAIN_SET=(--set max_batches_per_epoch=2 --set data.val_max_clips=40 --batch-size 8)
  BENCH=(--batches 8 --steps 2 --warmup 1 --split-steps 1 --threads 1)
  COMPILE_BENCH=(--batches 8 --steps 2 --warmup 1 --split-steps 1 --threads 1 --compile-backend aot_eager)
  WORKERS=2; PYTEST_TARGET=(tests/test_cuda_training.py tests/test_models.py)
else
  SIZE=demo; EPOCHS=3; DEMO_EPOCHS=4; TRAIN_SET=(--set data.val_batch_size=256)
  BENCH=(--batches 32 256 --steps 20 --warmup 4); COMPILE_BENCH=(--batches 32 256 --steps 30 --warmup 4)
  WORKERS=$(nproc); mapfile -t PYTEST_TARGET < <(grep -l "mark.cuda" tests/*.py)  # only modules with CUDA tests
fi
DATA=${GPU_CHECK_DATA:-$WORK/data/TAU-synth-$SIZE}  # GPU_CHECK_DATA: an existing dataset with its cache

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }

# step NAME CAP_SECONDS COMMAND...: run under timeout (at most CAP, at most what the budget has left),
# output to $WORK/NAME.out, its tail to the log, a status line to the figures
step() {
  local name=$1 cap=$2; shift 2
  if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then
    STATUS+=("| $name | skipped | 0 | GPU_CHECK_SKIP |"); return 0
  fi
  local limit; limit=$(left)
  [ "$limit" -gt "$cap" ] && limit=$cap
  if [ "$limit" -lt 5 ]; then
    STATUS+=("| $name | skipped | 0 | no time left |"); echo "== $name: skipped (no time left)" >> "$LOG"; return 1
  fi
  echo "== $name (limit ${limit}s, at ${SECONDS}s): $*" | tee -a "$LOG"
  local t0=$SECONDS rc
  timeout -k 5 "$limit" "$@" > "$WORK/$name.out" 2>&1
  rc=$?
  tail -n 40 "$WORK/$name.out" | cut -c1-400 >> "$LOG"
  local note=ok; [ $rc -eq 124 ] && note="timed out after ${limit}s"; [ $rc -ne 0 ] && [ $rc -ne 124 ] && note="failed"
  STATUS+=("| $name | $rc | $((SECONDS - t0)) | $note |")
  echo "== $name: rc=$rc in $((SECONDS - t0))s ($note)" | tee -a "$LOG"
  return $rc
}

# --- install, environment ---------------------------------------------------------------------------
if ls .whl/*.whl > /dev/null 2>&1; then
  step install 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} OMP_WAIT_POLICY=PASSIVE
printf '#!/bin/sh\nexec python3 -c "import sys; from dsmn.cli import main; sys.exit(main(sys.argv[1:]))" "$@"\n' \
  > "$WORK/bin/dsmn" && chmod +x "$WORK/bin/dsmn"
export PATH=$WORK/bin:$PATH
step env 30 bash -c 'nvidia-smi || echo "no nvidia-smi"; python3 -c "
import torch, numpy, onnxruntime, librosa, soundfile, soxr, torchinfo
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version(),
      \"available\", torch.cuda.is_available())
if torch.cuda.is_available():
    print(\"gpu\", torch.cuda.get_device_name(0), \"nccl\", torch.cuda.nccl.version())
print(\"numpy\", numpy.__version__, \"onnxruntime\", onnxruntime.__version__, \"librosa\", librosa.__version__)
import dsmn; print(\"dsmn from\", dsmn.__file__)
"'

# --- CUDA tests, with the data generated on the CPU cores meanwhile ----------------------------------
( if [ -n "${GPU_CHECK_DATA:-}" ]; then echo "using $DATA" > "$WORK/synth.out"; : > "$WORK/features.out"; echo 0 > "$WORK/data.rc"; exit 0; fi
  timeout -k 5 150 dsmn synth "$DATA" --size "$SIZE" --seed 0 --workers "$WORKERS" > "$WORK/synth.out" 2>&1 &&
  timeout -k 5 90 dsmn features "$DATA" --workers "$WORKERS" --quiet > "$WORK/features.out" 2>&1
  echo $? > "$WORK/data.rc" ) &
DATA_PID=$!
step tests 110 python3 -m pytest -q -m cuda -p no:cacheprovider -o addopts="" -rA --continue-on-collection-errors \
  "${PYTEST_TARGET[@]}"
[ -f "$WORK/tests.out" ] && tail -c 60000 "$WORK/tests.out" > "$OUT/pytest.log"
step data 120 bash -c "while kill -0 $DATA_PID 2>/dev/null; do sleep 1; done; cat '$WORK/synth.out' '$WORK/features.out' | tail -n 8; exit \$(cat '$WORK/data.rc' 2>/dev/null || echo 1)"

# --- training on the device ----------------------------------------------------------------------------
COMMON=(--data "$DATA" --model model1 --device "$DEVICE" --no-progress "${TRAIN_SET[@]}")
step train_recipe 75 dsmn train "${COMMON[@]}" --out "$WORK/runs/recipe" --epochs "$EPOCHS"
if [ -f "$WORK/runs/recipe/checkpoints/best.pt" ]; then
  cp "$WORK/runs/recipe/checkpoints/best.pt" "$OUT/best.pt"
fi
TORCHRUN=(python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m dsmn.cli.train)
step train_more 90 bash -c '
  dsmn train "$@" --config demo --out '"$WORK"'/runs/demo --epochs '"$DEMO_EPOCHS"' > '"$WORK"'/demo.out 2>&1 & a=$!
  '"${TORCHRUN[*]}"' "$@" --out '"$WORK"'/runs/ddp_recipe --epochs '"$EPOCHS"' > '"$WORK"'/ddp_recipe.out 2>&1 & b=$!
  '"${TORCHRUN[*]}"' "$@" --config demo --out '"$WORK"'/runs/ddp_demo --epochs '"$DEMO_EPOCHS"' > '"$WORK"'/ddp_demo.out 2>&1 & c=$!
  rc=0; for p in $a $b $c; do wait $p || rc=1; done
  for f in demo ddp_recipe ddp_demo; do echo "--- $f"; grep -v "^\s*$" '"$WORK"'/$f.out | tail -n 12; done
  exit $rc' train_more "${COMMON[@]}"

# --- throughput: before/after the GPU-wait fixes, then torch.compile -----------------------------------
step speed 100 python3 benchmarks/gpu_training_speed.py --data "$DATA" --device "$DEVICE" "${BENCH[@]}" \
  --variants faithful shared shared-float sum --modes before after --out "$WORK/speed.md"
if [ "$DEVICE" != cpu ] || [ "${GPU_CHECK_COMPILE:-0}" = 1 ]; then  # on the CPU: aot_eager, a quick trace check
  step compile 200 python3 benchmarks/gpu_training_speed.py --data "$DATA" --device "$DEVICE" "${COMPILE_BENCH[@]}" \
    --variants faithful --modes after compile --out "$WORK/compile.md"
fi

# --- figures -------------------------------------------------------------------------------------------
{
  echo "# dsmn GPU check ($(date -u +%Y-%m-%dT%H:%MZ), device $DEVICE, $(elapsed) s)"
  echo
  python3 -c "import torch; print('GPU:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none',
    '| torch', torch.__version__, '| CUDA', torch.version.cuda)" 2>&1
  echo
  echo "| step | rc | seconds | note |"; echo "|---|---:|---:|---|"
  printf '%s\n' "${STATUS[@]}"
  echo
  echo "## CUDA tests"; echo; echo '```'; grep -E "passed|failed|error|skipped" "$WORK/tests.out" | tail -n 5; echo '```'
  echo; echo "## Training runs (demo data, $DEVICE)"
  for run in recipe demo ddp_recipe ddp_demo; do
    f=$WORK/runs/$run/metrics.csv
    echo; echo "### $run"; echo
    if [ -f "$f" ]; then
      python3 - "$f" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keys = ["epoch", "train_loss", "val_loss", "val_accuracy", "epoch_seconds", "train_clips_per_second"]
print("| " + " | ".join(keys) + " |"); print("|" + "---|" * len(keys))
for r in rows:
    print("| " + " | ".join(f"{float(r[k]):.4g}" if k != "epoch" else r[k] for k in keys) + " |")
PY
    else
      echo "no metrics.csv"
    fi
  done
  for f in "$WORK/speed.md" "$WORK/compile.md"; do echo; [ -f "$f" ] && cat "$f" || echo "($(basename "$f") missing)"; done
  echo; echo "best.pt: $( [ -f "$OUT/best.pt" ] && ls -l "$OUT/best.pt" | awk '{print $5 " bytes"}' || echo missing)"
} > "$FIG" 2>&1
cat "$FIG"
echo "total $(elapsed) s"
