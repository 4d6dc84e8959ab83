#!/usr/bin/env bash
# The GPU precision/compile comparison whose report is committed under docs/, on the conv
# U-Net at a batch that keeps an H100/H200 busy. Phases, most informative first:
#   goals         the GPU throughput goals (bf16 + compile >= 2.5x fp32 eager, bf16 eager
#                 >= 1.0x, data wait <= 2%, MFU >= 25%, validation quality within the fp32
#                 spread; sweeps/gpu_goals.py) in six runs: the fp32 eager baseline (twice:
#                 cudnn.benchmark off and on, for the quality goal's spread); bf16 with every
#                 choice for a faster step (FAST below: channels-last convs, float32
#                 BatchNorm, a fused optimizer, data made on the device), eager and under
#                 CUDA graphs; the same at batch 1024; and the fastest setting on folder_mix
#                 read from disk (a corpus written to $WORK/corpus)
#   step_choices  each of those choices alone, step time only (python -m benchmarks.step)
#   bench_data    the per-sample cost of the data stages, loader vs device
#                 (python -m benchmarks.device_data)
#   eager compiled profile autotune   fp32 and bf16/fp16 autocast, with and without
#                 cudnn.benchmark, eager and torch.compile (reduce-overhead = CUDA graphs,
#                 max-autotune), profiler tables of the eager fp32 and bf16 steps
#   device_data   data on the device against the loader at the fastest compile modes
#   lstm transducer  the other models, each against its own fp32 eager row
#   benchmarks/recipes/gpu_precision_sweep.sh OUT_DIR [extra overrides...]
#   PHASES="goals step_choices bench_data" fits a 15-minute lease; the default is all of them.
#   BIG_BATCH (1024) is the larger batch of goals and step_choices; BENCH_DATA_ARGS go to
#   python -m benchmarks.device_data (a dry run on CPU: "--batch 16 --batches 2 --files 20").
# After each conv phase, `python -m sweeps.gpu_goals` prints those goals beside the
# measured figures (OUT_DIR/goals.md).
# Runs are written under $WORK (default OUT_DIR). OUT_DIR receives the reports and a
# tarball of the small files (summaries, histories, configs, logs), never checkpoints.
# The report is rewritten after each phase, so a session cut short still reports.
set -uo pipefail
OUT=${1:?usage: $0 OUT_DIR [overrides...]}
shift
WORK=${WORK:-$OUT}
PY=${PYTHON:-python3}
PHASES=${PHASES:-goals step_choices bench_data eager compiled profile autotune device_data lstm transducer}
COMMON=(
  model=conv model.hidden=64 model.depth=5 trainer.batch_size=256
  trainer.epochs=1 trainer.steps_per_epoch=120 trainer.warmup_steps=20 trainer.log_every=10
  trainer.num_workers=6 trainer.val_batch_size=32 trainer.progress=log
  "$@"
)
SYNTHETIC=(data.corpus_size=64 data.noise_corpus_size=32 data.val_size=32)  # keys of data=synthetic only
FAST=(model.channels_last=true model.norm_float32=true optim.fused=true trainer.data_on_device=true)
mkdir -p "$OUT" "$WORK"
keep() {  # FILES...: into OUT, unless the runs are written there already
  [ "$(realpath "$WORK")" = "$(realpath "$OUT")" ] || cp "$@" "$OUT"/ 2>/dev/null
  return 0
}
report() {
  $PY -m sweeps.report "$WORK" --baseline precision=fp32,compile=none,precision.cudnn_benchmark=false --mfu > "$WORK/report.txt" 2>&1
  tail -n 20 "$WORK/report.txt"
  $PY -m sweeps.gpu_goals "$WORK/report.csv" > "$WORK/goals.md" 2>&1 && head -n 8 "$WORK/goals.md"
  keep "$WORK"/report.md "$WORK"/report.csv "$WORK"/report.txt "$WORK"/goals.md
  (cd "$WORK" && find . -type f \( -name '*.json' -o -name '*.yaml' -o -name 'report.*' -o -name '*.png' -o -name '*.log' -o -name '*.txt' \) \
    -not -path '*/checkpoints/*' -print0 | tar --null -czf "$OUT/results.tar.gz" -T -)
}
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())") > "$WORK/device.txt" 2>&1
# The phase's own overrides come last: in Hydra the last value of a key wins.
run() {  # NAME OVERRIDES...: a multirun on the embedded data
  local name=$1
  shift
  $PY -m trainer -m "${SYNTHETIC[@]}" "${COMMON[@]}" "$@" hydra.sweep.dir="$WORK/$name" > "$WORK/$name.log" 2>&1
}
folder() {  # NAME OVERRIDES...: a multirun on folder_mix, from a corpus on disk written once
  local name=$1
  shift
  [ -d "$WORK/corpus/speech" ] || $PY -c "import sys; from pathlib import Path; from benchmarks.common import write_corpus; write_corpus(Path(sys.argv[1]), 400)" "$WORK/corpus"
  $PY -m trainer -m "${COMMON[@]}" data=folder_mix data.speech_dir="$WORK/corpus/speech" \
    data.noise_dir="$WORK/corpus/noise" data.cache_dir="$WORK/cache" "$@" hydra.sweep.dir="$WORK/$name" > "$WORK/$name.log" 2>&1
}
for phase in $PHASES; do
  case $phase in
    goals)
      # two fp32 rows: cudnn.benchmark changes rounding only, so their difference stands in for
      # the seed spread that the quality goal is judged against (sweeps/gpu_goals.py)
      run goals_base precision=fp32 precision.cudnn_benchmark=false,true compile=none
      run goals precision=amp_bf16 precision.cudnn_benchmark=true compile=none,reduce_overhead "${FAST[@]}"
      run goals_1024 precision=amp_bf16 precision.cudnn_benchmark=true compile=reduce_overhead "${FAST[@]}" trainer.batch_size="${BIG_BATCH:-1024}"
      folder goals_folder precision=amp_bf16 precision.cudnn_benchmark=true compile=reduce_overhead "${FAST[@]}" ;;
    step_choices)
      $PY -m benchmarks.step --batch2 "${BIG_BATCH:-1024}" model=conv model.hidden=64 model.depth=5 trainer.batch_size=256 \
        "${SYNTHETIC[@]}" "$@" > "$WORK/bench_step.md" 2>&1; cat "$WORK/bench_step.md"
      keep "$WORK/bench_step.md"; continue ;;
    eager) run eager precision=fp32,amp_bf16,amp_fp16 precision.cudnn_benchmark=false,true compile=none ;;
    compiled) run compiled precision=fp32,amp_bf16 precision.cudnn_benchmark=true compile=default,reduce_overhead ;;
    # the top-operator tables land in profile.log (profiler: 5 active steps after 7)
    profile) $PY -m trainer -m precision=fp32,amp_bf16 precision.cudnn_benchmark=true compile=none profile=true "${SYNTHETIC[@]}" "${COMMON[@]}" \
               trainer.steps_per_epoch=20 hydra.sweep.dir="$WORK/profiled" > "$WORK/profile.log" 2>&1
             # and the bf16 step with the FAST choices: what is left to gain
             $PY -m trainer -m precision=amp_bf16 precision.cudnn_benchmark=true compile=none profile=true "${SYNTHETIC[@]}" "${COMMON[@]}" \
               "${FAST[@]}" trainer.steps_per_epoch=20 hydra.sweep.dir="$WORK/profiled_fast" > "$WORK/profile_fast.log" 2>&1 ;;
    autotune) run autotune precision=amp_bf16 precision.cudnn_benchmark=true compile=max_autotune ;;
    # the fastest settings with the mixing and augmentation on the GPU (augment=default adds
    # gain, shift and polarity), for the embedded data and for folder_mix from disk
    device_data)
      run device_data precision=amp_bf16 precision.cudnn_benchmark=true compile=reduce_overhead,max_autotune \
        trainer.data_on_device=false,true augment=none,default
      folder device_data_folder precision=amp_bf16 precision.cudnn_benchmark=true compile=reduce_overhead \
        trainer.data_on_device=false,true ;;
    bench_data) $PY -m benchmarks.device_data ${BENCH_DATA_ARGS:-} > "$WORK/bench_device_data.md" 2>&1; cat "$WORK/bench_device_data.md"
      keep "$WORK/bench_device_data.md"; continue ;;
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
