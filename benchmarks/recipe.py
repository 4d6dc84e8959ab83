"""Benchmark: which default recipe helps most on real speech? A sweep's runs, scored on the
espeak-ng speech set and grouped over their seeds.

    python -m trainer -m augment=none,recordings loss=si_sdr,gtcrn trainer.seed=0,1,2 \\
        hydra.sweep.dir=outputs/recipe
    python -m benchmarks.recipe outputs/recipe [more sweeps] [--data outputs/speech_testset] [--anchor deepfilternet]

Every run of the sweeps (its best checkpoint) is scored as `python -m benchmarks.speech`
scores one; runs that differ only in `trainer.seed` (one experiment group) are one
configuration, named by the label it first appears under (list the sweep that varies
everything first; a name that another configuration already has is prefixed with its
sweep's folder, as a multirun names its jobs by what it sweeps alone). Per
configuration, the mean over seeds ± sd with its 95% interval (Student t) of: the in-domain
SI-SDRi (the run's own validation), the training time, and on the speech set SI-SDRi,
PESQ-WB gain, STOI change, and SI-SDRi in babble and at 10 dB input SNR (where a model
that over-suppresses shows). `--anchor` adds DeepFilterNet3's row. Markdown, for
docs/measurements/.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import torch

from benchmarks.common import machine
from sweeps.stats import estimate
from trainer import summary as run_summary
from trainer.build import build_task
from trainer.data import speech_testset
from trainer.experiments.index import read_run
from trainer.experiments.manifest import members
from trainer.inference.deepfilternet import anchor
from trainer.inference.evaluate import means, pair_examples, paired_files, score
from trainer.inference.loading import load_model

FIGURES = ("in-domain SI-SDRi", "train s", "SI-SDRi", "PESQ-WB gain", "STOI change", "babble SI-SDRi", "10 dB SI-SDRi")


def figures(rows: list[dict], manifest: dict[str, dict]) -> dict[str, float]:
    """The speech set's figures of one model's score rows."""
    m = means(rows)

    def sdri(key: str, value: str) -> float:  # NaN where the set has no such pair
        group = [r for r in rows if manifest[r["file"]][key] == value]
        return means(group)["si_sdri"] if group else math.nan

    return {
        "SI-SDRi": m["si_sdri"],
        "PESQ-WB gain": m["pesq_wb_gain"],
        "STOI change": m["stoi_out"] - m["stoi_in"],
        "babble SI-SDRi": sdri("noise", "babble"),
        "10 dB SI-SDRi": sdri("snr_db", "10"),
    }


def speech_figures(run: Path, data: Path, manifest: dict[str, dict]) -> dict[str, float]:
    """`figures` of a run's best checkpoint, kept beside it (`speech-figures.json`, keyed
    by the data folder and the checkpoint's time) so that a second report costs nothing."""
    checkpoint = run / "checkpoints" / "best.pt"
    key = f"{data.resolve()}:{checkpoint.stat().st_mtime_ns}"
    cache = run / "speech-figures.json"
    kept = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in kept:
        model, cfg = load_model(run, torch.device("cpu"))
        examples = pair_examples(paired_files(data), int(cfg.data.sample_rate))
        kept[key] = figures(score(model, build_task(cfg.task), examples, torch.device("cpu")), manifest)
        cache.write_text(json.dumps(kept, indent=1))
    return kept[key]


def configuration(label: str) -> str:
    """A run's label without its seed: its seed repeats share it."""
    kept = [part for part in label.split(",") if not part.startswith("trainer.seed=")]
    return ",".join(kept) or "default"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", type=Path, nargs="+", help="sweep folders (python -m trainer -m ...)")
    parser.add_argument("--data", type=Path, default=Path("outputs/speech_testset"))
    parser.add_argument("--anchor", choices=["deepfilternet"])
    args = parser.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        speech_testset.build(args.data)
    manifest = {r["file"]: r for r in csv.DictReader(open(args.data / "manifest.csv"))}
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    names: dict[str, str] = {}  # a configuration's name: the label it first appears under
    runs = {folder: (sweep, label) for sweep in args.sweeps for folder, label in members(sweep).items()}
    for folder, (sweep, label) in runs.items():
        s = run_summary.read(folder)
        if s is None or not (Path(folder) / "checkpoints" / "best.pt").is_file():
            print(f"skipped {folder}: not finished", file=sys.stderr)
            continue
        final = s.get("final_metrics") or {}
        got = speech_figures(Path(folder), args.data, manifest) | {
            "in-domain SI-SDRi": final.get("si_sdri"),
            "train s": s.get("train_seconds"),
        }
        group = read_run(Path(folder)).grp or label  # the config without its seed: repeats share it
        if group not in names:
            name = configuration(label)
            # A multirun names its jobs by what it sweeps, so two sweeps' different configurations
            # can share a name ("default", "trainer.seed=1"): the sweep's folder tells them apart.
            names[group] = f"{sweep.name}: {name}" if name in names.values() else name
        groups[names[group]].append(got)
        print(f"scored {label}: " + ", ".join(f"{k} {v:.3g}" for k, v in got.items() if v is not None), file=sys.stderr)
    model, why = anchor(args.anchor)
    if model is not None:
        task = build_task({"_target_": "trainer.tasks.Denoise", "sample_rate": 16000})
        rows = score(model, task, pair_examples(paired_files(args.data), 16000), torch.device("cpu"))
        groups[model.name] = [figures(rows, manifest)]

    print(f"## Recipes on {args.data} ({len(manifest)} pairs): {', '.join(map(str, args.sweeps))}\n")
    print(f"Machine: {machine()}. Mean ± sd over seeds [95% interval, Student t]; n = seeds.\n")
    if why:
        print(f"_{why}._\n")
    print("| configuration | n | " + " | ".join(FIGURES) + " |")
    print("|---|---|" + "---|" * len(FIGURES))
    for name, runs in groups.items():
        cells = []
        for key in FIGURES:
            e = estimate([r[key] for r in runs if r.get(key) is not None])
            if e is None:
                cells.append("—")
            else:
                spec = ".0f" if key == "train s" else ".3f" if key == "STOI change" else ".2f"
                cells.append(e.format(spec))
        print(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
