"""Benchmark: the exported streaming model, one hop per call on one CPU thread.

    python -m benchmarks.export [--model lstm|gtcrn] [--seconds 20] [--repeats 3]

Builds the default model (the causal LSTM enhancer of conf/model/lstm.yaml) or, with
`--model gtcrn`, the GTCRN (conf/model/gtcrn.yaml), with random weights (speed does not
depend on them), exports it with `python -m trainer.export`, and
feeds `--seconds` of audio through each form one hop at a time, as an application's audio
callback would: ONNX Runtime (one intra-op and inter-op thread), TorchScript and eager
PyTorch (`torch.set_num_threads(1)`). Reports the per-hop compute time (median and 99th
percentile over all hops of the best repeat), the real-time factor (compute seconds per
second of audio; the goal is <= 0.05: a hop computed in a twentieth of its own duration)
and the algorithmic latency.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import untrained_checkpoint
from models.streaming import streaming_form
from trainer.inference import export
from trainer.inference.loading import load_model
from trainer.provenance import cpu


def hop_times(step, audio: torch.Tensor, state, hop: int) -> np.ndarray:
    times = []
    with torch.no_grad():
        for chunk in audio.split(hop, dim=-1):
            start = time.perf_counter()
            _, *state = step(chunk, *state)
            times.append(time.perf_counter() - start)
    return np.array(times)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["lstm", "gtcrn"], default="lstm")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp)
        ckpt = untrained_checkpoint(root, (f"model={args.model}",))
        start = time.perf_counter()
        if export.main([str(ckpt), "-o", str(root / "export")]) != 0:
            raise SystemExit("trainer.export failed")
        export_seconds = time.perf_counter() - start
        info = json.loads((root / "export" / "export.json").read_text())
        model, _ = load_model(ckpt, torch.device("cpu"))
        eager = streaming_form(model, info["sample_rate"]).eval()
        hop, rate = info["hop"], info["sample_rate"]
        hops = int(args.seconds * rate) // hop
        audio = torch.randn(1, hops * hop, generator=torch.Generator().manual_seed(0)) * 0.1
        forms = {
            "ONNX Runtime": export.OnnxStep(
                root / "export" / "streaming.onnx", ["chunk", *eager.state_names], threads=1
            ),
            "TorchScript": export.load_torchscript(root / "export" / "streaming.pt"),
            "PyTorch eager": eager,
        }
        rows = []
        for name, step in forms.items():
            hop_times(step, audio[:, : 20 * hop], eager.initial_state(1), hop)  # warm-up
            best = min((hop_times(step, audio, eager.initial_state(1), hop) for _ in range(args.repeats)), key=np.sum)
            rows.append((name, np.median(best) * 1e3, np.percentile(best, 99) * 1e3, best.sum() / (hops * hop / rate)))
    lat = info["latency"]
    params = sum(p.numel() for p in model.parameters())
    print(f"Streaming export, one hop per call, 1 thread; {cpu()['model']}, {os.cpu_count()} cores; "
          f"torch {torch.__version__}; model={args.model} ({type(model).__name__}, {params / 1e3:.1f} k parameters, "
          f"n_fft {info['n_fft']}, hop {hop} at {rate} Hz); {args.seconds:g} s of audio, "
          f"best of {args.repeats}\n")  # fmt: skip
    print("| form | per-hop median ms | per-hop p99 ms | RTF |\n|---|---|---|---|")
    for name, median, p99, rtf in rows:
        print(f"| {name} | {median:.3f} | {p99:.3f} | {rtf:.4f} |")
    print(f"\nhop {lat['hop_ms']:.1f} ms; algorithmic latency (window) {lat['algorithmic_ms']:.1f} ms, "
          f"window + hop {lat['algorithmic_plus_hop_ms']:.1f} ms; export took {export_seconds:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
