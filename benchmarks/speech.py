"""Benchmark: does a model trained on the embedded data help on real speech?

    python -m benchmarks.speech [RUN_DIR] [--data DIR]    # RUN_DIR defaults to outputs/runs/default

Scores RUN_DIR's best checkpoint on the espeak-ng speech set (built by
`trainer.data.speech_testset` on first use) and prints, in Markdown, SI-SDR improvement and
PESQ (wide-band) gain overall, by SNR and by noise type, beside the run's own in-domain
validation figure so the gap between the two is visible.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import torch

from trainer import summary as run_summary
from trainer.build import build_task
from trainer.data import speech_testset
from trainer.inference.evaluate import means, pair_examples, paired_files, score
from trainer.inference.loading import load_model


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speech", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, nargs="?", default=Path("outputs/runs/default"))
    parser.add_argument("--data", type=Path, default=Path("outputs/speech_testset"))
    args = parser.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        speech_testset.build(args.data)
    manifest = {r["file"]: r for r in csv.DictReader(open(args.data / "manifest.csv"))}
    model, cfg = load_model(args.run, torch.device("cpu"))
    examples = pair_examples(paired_files(args.data), int(cfg.data.sample_rate))
    rows = score(model, build_task(cfg.task), examples, torch.device("cpu"))
    overall = means(rows)
    summary = run_summary.read(args.run) or {}
    final = summary.get("final_metrics", {})

    print(f"## Speech transfer: {args.run} on {args.data} ({overall['files']} files)\n")
    print("| set | SI-SDR in | SI-SDR out | SI-SDRi | PESQ-WB in | PESQ-WB out | gain | STOI in | STOI out |")
    print("|---|---|---|---|---|---|---|---|---|")
    if final:
        sdr_in = final["si_sdr"] - final["si_sdri"]
        print(
            f"| in-domain validation (synthetic) | {sdr_in:.2f} | {final['si_sdr']:.2f} | {final['si_sdri']:+.2f} "
            "| | | | | |"
        )
    print(
        f"| espeak-ng speech, all | {overall['si_sdr_in']:.2f} | {overall['si_sdr_out']:.2f} "
        f"| **{overall['si_sdri']:+.2f}** "
        f"| {overall['pesq_wb_in']:.2f} | {overall['pesq_wb_out']:.2f} | **{overall['pesq_wb_gain']:+.2f}** "
        f"| {overall['stoi_in']:.3f} | {overall['stoi_out']:.3f} |"
    )
    for key in ("snr_db", "noise"):
        groups = defaultdict(list)
        for row in rows:
            groups[manifest[row["file"]][key]].append(row)
        for name, group in sorted(groups.items(), key=lambda kv: (len(kv[0]), kv[0])):  # 0 < 5 < 10
            m = means(group)
            label = f"{name} dB" if key == "snr_db" else name
            print(
                f"| {label} | {m['si_sdr_in']:.2f} | {m['si_sdr_out']:.2f} | {m['si_sdri']:+.2f} "
                f"| {m['pesq_wb_in']:.2f} | {m['pesq_wb_out']:.2f} | {m['pesq_wb_gain']:+.2f} "
                f"| {m['stoi_in']:.3f} | {m['stoi_out']:.3f} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
