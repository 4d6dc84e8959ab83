#!/usr/bin/env bash
# The GPU precision/compile comparison whose report is committed under docs/: the conv
# U-Net at a batch that keeps an H100/H200 busy; fp32 and bf16/fp16 autocast, with and
# without cudnn.benchmark, eager and torch.compile (reduce-overhead = CUDA graphs,
# max-autotune), plus profiler traces of the eager fp32 and bf16 steps; then the LSTM
# enhancer and the transducer (samples/s, memory), each against its own fp32 eager row.
#   sweeps/gpu_precision_sweep.sh OUT_DIR [extra overrides...]
#   PHASES="eager compiled profile autotune lstm transducer" (default: all, most informative first)
# After each conv phase, `python -m sweeps.gpu_goals` prints issue 22's goals beside the
# measured figures (OUT_DIR/goals.md).
# Runs are written under $WORK (default OUT_DIR). OUT_DIR receives the reports and a
# tarball of the small files (summaries, histories, configs, logs), never checkpoints.
# The report is rewritten after each phase, so a session cut short still reports.
set -uo pipefail
OUT=${1:?usage: $0 OUT_DIR [overrides...]}
shift
WORK=${WORK:-$OUT}
PY=${PYTHON:-python3}
PHASES=${PHASES:-eager compiled profile autotune lstm transducer}
COMMON=(
  model=conv model.hidden=64 model.depth=5 trainer.batch_size=256
  trainer.epochs=1 trainer.steps_per_epoch=120 trainer.warmup_steps=20 trainer.log_every=10
  trainer.num_workers=6 data.corpus_size=64 data.noise_corpus_size=32
  data.val_size=32 trainer.val_batch_size=32 trainer.progress=log
  "$@"
)
mkdir -p "$OUT" "$WORK"
report() {
  $PY -m sweeps.report "$WORK" --baseline precision=fp32,compile=none,precision.cudnn_benchmark=false --mfu > "$WORK/report.txt" 2>&1
  tail -n 20 "$WORK/report.txt"
  $PY -m sweeps.gpu_goals "$WORK/report.csv" > "$WORK/goals.md" 2>&1 && head -n 8 "$WORK/goals.md"
  cp "$WORK"/report.md "$WORK"/report.csv "$WORK"/report.txt "$WORK"/goals.md "$OUT"/ 2>/dev/null
  (cd "$WORK" && find . -type f \( -name '*.json' -o -name '*.yaml' -o -name 'report.*' -o -name '*.png' -o -name '*.log' -o -name '*.txt' \) \
    -not -path '*/checkpoints/*' -print0 | tar --null -czf "$OUT/results.tar.gz" -T -)
}
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())") > "$WORK/device.txt" 2>&1
run() {
  local name=$1
  shift
  $PY -m trainer -m "$@" "${COMMON[@]}" hydra.sweep.dir="$WORK/$name" > "$WORK/$name.log" 2>&1
}
for phase in $PHASES; do
  case $phase in
    eager) run eager precision=fp32,amp_bf16,amp_fp16 precision.cudnn_benchmark=false,true compile=none ;;
    compiled) run compiled precision=fp32,amp_bf16 precision.cudnn_benchmark=true compile=default,reduce_overhead ;;
    # the top-operator tables land in profile.log (profiler: 5 active steps after 7)
    profile) $PY -m trainer -m precision=fp32,amp_bf16 precision.cudnn_benchmark=true compile=none profile=true "${COMMON[@]}" \
               trainer.steps_per_epoch=20 hydra.sweep.dir="$WORK/profiled" > "$WORK/profile.log" 2>&1 ;;
    autotune) run autotune precision=amp_bf16 precision.cudnn_benchmark=true compile=max_autotune ;;
    # other models: their own folder and report (a speedup against the conv baseline means nothing)
    lstm|transducer)
      sub="$WORK/$phase"; mkdir -p "$sub" "$OUT/$phase"
      if [ "$phase" = lstm ]; then
        args=(model=lstm model.hidden=256 model.layers=2 trainer.batch_size=256)
      else
        args=(task=transducer trainer.batch_size=128)
      fi
      $PY -m trainer -m precision=fp32,amp_bf16,amp_fp16 precision.cudnn_benchmark=true compile=none,default \
        "${args[@]}" trainer.epochs=1 trainer.steps_per_epoch=120 trainer.warmup_steps=20 trainer.log_every=10 \
        trainer.num_workers=6 trainer.progress=log "$@" hydra.sweep.dir="$sub/runs" > "$sub/sweep.log" 2>&1
      $PY -m sweeps.report "$sub/runs" --baseline precision=fp32,compile=none --mfu > "$sub/report.txt" 2>&1
      tail -n 12 "$sub/report.txt"
      cp "$sub"/runs/report.md "$sub"/runs/report.csv "$sub/report.txt" "$OUT/$phase"/ 2>/dev/null
      continue ;;
  esac
  report
done
