#!/usr/bin/env bash
# Every GPU measurement of the docs in one device call of at most 10 minutes. From the repository root:
#
#   OUT=/path/to/results bash benchmarks/gpu_session.sh
#
# Phase 1 (the GPU to itself): benchmarks/gpu_check.sh without its training runs: CUDA tests while the
#   demo data is generated, then the training-step throughput (before/after the GPU-wait fixes, then
#   torch.compile). Throughput is measured while nothing else runs on the GPU.
# Phase 2 (at once, on the phase-1 data): gpu_check.sh's training runs (recipe, demo, torchrun/NCCL) and
#   the accuracy benchmarks that a GPU makes affordable: PCGrad merge rule, distillation / Freq-MixStyle /
#   device IRs, device-specific fine-tuning, the TAU 2020 family comparison. Each runs under its own
#   time limit; a benchmark cut short says so in its log.
# Everything small that they write (tables, logs, metrics, the recipe run's best.pt) is packed into
# $OUT/gpu_session.tgz (the device tool returns at most 8 files).
set -u
: "${OUT:?set OUT to the folder for the results}"
PHASE1_S=${PHASE1_S:-230}
PHASE2_S=${PHASE2_S:-330}
R=/tmp/gpu-session
rm -rf "$R" && mkdir -p "$R/check_speed" "$R/check_train" "$OUT"
t0=$SECONDS

OUT=$R/check_speed GPU_CHECK_WORK=/tmp/gs-speed GPU_CHECK_SKIP="train_recipe train_more" GPU_CHECK_BUDGET_S=$PHASE1_S \
  bash benchmarks/gpu_check.sh > "$R/phase1.log" 2>&1
echo "phase 1 done at $((SECONDS - t0)) s" | tee -a "$R/session.log"

DATA=/tmp/gs-speed/data/TAU-synth-demo
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2
bench() {  # bench NAME SCRIPT ARGS...: run one benchmark script under the phase-2 limit, if it exists
  local name=$1 script=$2; shift 2
  if [ ! -f "$script" ]; then echo "$name: $script missing" >> "$R/session.log"; return 0; fi
  local s=$SECONDS
  timeout -k 5 "$PHASE2_S" python3 "$script" "$@" > "$R/$name.log" 2>&1
  echo "$name: rc=$? in $((SECONDS - s)) s" >> "$R/session.log"
}
(OUT=$R/check_train GPU_CHECK_WORK=/tmp/gs-train GPU_CHECK_DATA=$DATA GPU_CHECK_SKIP="install env tests speed compile" \
  GPU_CHECK_BUDGET_S=$PHASE2_S bash benchmarks/gpu_check.sh > "$R/phase2_check.log" 2>&1) &
bench pcgrad_merge benchmarks/pcgrad_merge.py --data "$DATA" --device cuda --jobs 4 --threads 2 --out /tmp/gs-pcgrad &
bench distillation benchmarks/distillation.py --data "$DATA" --device cuda --jobs 8 --threads 2 --out /tmp/gs-kd &
bench device_finetune benchmarks/device_finetune.py --size large --device cuda --jobs 2 --threads 4 \
  --out /tmp/gs-finetune &
bench compare_tau20 benchmarks/compare_tau20.py --device cuda --jobs 6 --threads 2 --out /tmp/gs-tau20 &
wait
echo "phase 2 done at $((SECONDS - t0)) s" | tee -a "$R/session.log"

# the small files: tables, logs, metrics, reports, curves (no data, caches or checkpoints but one best.pt)
for d in /tmp/gs-pcgrad /tmp/gs-kd /tmp/gs-finetune /tmp/gs-tau20; do
  [ -d "$d" ] || continue
  find "$d" -path "*/data" -prune -o -type f \( -name "*.md" -o -name "*.json" -o -name "*.csv" -o -name "*.log" \
    -o -name "*.yaml" -o -name "*.tsv" \) -size -2M -print | while read -r f; do
    mkdir -p "$R/$(basename "$d")/$(dirname "${f#"$d"/}")" && cp "$f" "$R/$(basename "$d")/${f#"$d"/}"
  done
done
tar czf "$OUT/gpu_session.tgz" -C "$R" . && cp "$R/check_speed/gpu_figures.md" "$OUT/speed_figures.md" 2>/dev/null
cp "$R/check_train/gpu_figures.md" "$OUT/train_figures.md" 2>/dev/null
cp "$R/session.log" "$OUT/session.log"
ls -la "$OUT"
echo "total $((SECONDS - t0)) s"
