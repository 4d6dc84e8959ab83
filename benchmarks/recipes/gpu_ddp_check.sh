#!/usr/bin/env bash
# What only a GPU shows for data parallelism: the CUDA-only tests (NCCL + gloo under
# torchrun, DDP inside CUDA graphs, cuDNN LSTM, AMP), then the cost of the DDP wrapper on
# one GPU: the same job as one plain process and under `torchrun --nproc_per_node=1`,
# eager and compiled (reduce-overhead), bf16.
#   benchmarks/recipes/gpu_ddp_check.sh OUT_DIR      (TESTS=0: skip the tests; COMPILE="none": eager only)
set -uo pipefail
OUT=${1:?usage: $0 OUT_DIR}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'GPUs:', torch.cuda.device_count())"; } > "$OUT/device.txt"
if [ "${TESTS:-1}" = 1 ]; then
  $PY -m pytest -q -p no:cacheprovider -p no:logging --tb=short -m gpu tests/ 2>&1 | tail -n 40 > "$OUT/gpu-tests.txt"
  $PY -m pytest -q -p no:cacheprovider -p no:logging --tb=short tests/test_lstm.py -k cudnn 2>&1 | tail -n 15 >> "$OUT/gpu-tests.txt"
fi
touch "$OUT/gpu-tests.txt"
JOB=(model=conv model.hidden=64 model.depth=5 trainer.batch_size=128 precision=amp_bf16
     trainer.epochs=1 trainer.steps_per_epoch=150 trainer.warmup_steps=30 trainer.log_every=10
     trainer.num_workers=6 data.corpus_size=64 data.noise_corpus_size=32 data.val_size=32
     trainer.val_batch_size=32 trainer.progress=log trainer.device=cuda trainer.validation.slow_examples=0)
for compile in ${COMPILE:-none reduce_overhead}; do
  $PY -m trainer "${JOB[@]}" compile=$compile hydra.run.dir="$OUT/runs/plain-$compile" > "$OUT/plain-$compile.log" 2>&1
  $PY -m torch.distributed.run --nproc_per_node=1 -m trainer "${JOB[@]}" compile=$compile \
    hydra.run.dir="$OUT/runs/torchrun1-$compile" > "$OUT/torchrun1-$compile.log" 2>&1
done
$PY - "$OUT" > "$OUT/ddp-overhead.md" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| launch | compile | status | step ms (median) | samples/s | warm-up s | best SI-SDR |")
print("|---|---|---|---|---|---|---|")
for run in sorted((out / "runs").iterdir()):
    s = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    launch, compile = run.name.split("-", 1)
    print(f"| {launch} | {compile} | {s.get('status')} | {s.get('step_ms')} | {s.get('samples_per_s')} | "
          f"{round(s['warmup_seconds'], 1) if s.get('warmup_seconds') else None} | {s.get('best')} |")
PY
cat "$OUT/device.txt" "$OUT/gpu-tests.txt" "$OUT/ddp-overhead.md"
rm -rf "$OUT"/runs/*/checkpoints
