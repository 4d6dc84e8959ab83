"""Benchmark: the runs index at scale.

    python -m benchmarks.runs_index [--runs 10000]

Writes N synthetic run folders (experiment.json with a real resolved config, summary.json,
.hydra/) spread over 100 sweep folders under a temporary outputs folder, then times, as
`python -m trainer.runs list` does them (index refresh + query):
  * the first listing (builds the index from every folder);
  * a listing with nothing changed (walk + mtime check only) - the target, <= 1 s;
  * a filtered, sorted listing (`--where optim=sgd --metric si_sdri>5 --sort=-best`);
  * a listing after 100 runs changed and 100 were added;
  * `find` of one experiment by hash (what every launch does);
  * the whole `python -m trainer.runs list` process, interpreter start-up included.
Results as Markdown, with the CPU named.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer.experiments.index import RunsIndex
from trainer.identity import digest, job_config
from trainer.launch.startup import compose
from trainer.provenance import cpu


def real_config() -> dict:
    return job_config(compose([]))


def write_run(folder: Path, i: int, config: dict, rng: random.Random) -> None:
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    optim = rng.choice(["adam", "adamw", "sgd", "radam"])
    config = {**config, "optim": {**config["optim"], "lr": rng.choice([1e-3, 3e-3, 1e-2])}}
    exp = {"hash": digest({"i": i}), "group": digest({"g": i // 3}), "alias": folder.name, "seed": i % 3}
    (folder / "experiment.json").write_text(
        json.dumps({"experiment": exp, "choices": {"optim": optim, "model": "lstm"}, "config": config, "created": i})
    )
    best = rng.uniform(0, 12)
    summary = {"status": rng.choice(["completed"] * 8 + ["failed", "diverged"]), "experiment": exp,
               "monitor": "si_sdr", "best": best, "final": best, "objective": best, "steps": 1800,
               "samples_per_s": rng.uniform(100, 900),
               "final_metrics": {"si_sdr": best, "si_sdri": best + 2}}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runs_index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10000)
    args = parser.parse_args(argv)
    config, rng = real_config(), random.Random(0)
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        root = Path(tmp)
        folders = [root / "multirun" / f"sweep{i % 100:03d}" / f"job{i:05d}" for i in range(args.runs)]
        for i, folder in enumerate(folders):
            write_run(folder, i, config, rng)

        def listing(**query):
            index = RunsIndex(root).refresh()
            rows = index.select(**query)
            index.close()
            return rows

        figures = {"first listing (builds the index)": timed(listing)}
        figures["listing, nothing changed"] = min(timed(listing) for _ in range(3))
        query = {"where": ["optim=sgd"], "metric": ["si_sdri>5"], "sort": "-best"}
        figures["filtered and sorted listing"] = min(timed(lambda: listing(**query)) for _ in range(3))
        time.sleep(2.1)  # past the index's volatility window
        for folder in folders[:100]:
            (folder / "summary.json").unlink()
            os.utime(folder)
        for i in range(args.runs, args.runs + 100):
            write_run(root / "multirun" / "new" / f"job{i:05d}", i, config, rng)
        figures["listing after 100 changed + 100 added"] = timed(listing)
        index = RunsIndex(root).refresh()
        figures["find one experiment by hash"] = min(timed(lambda: index.find(digest({"i": 77}))) for _ in range(5))
        count = len(index.select())
        index.close()
        cli = [
            sys.executable,
            "-m",
            "trainer.runs",
            "--root",
            str(root),
            "list",
            "--where",
            "optim=sgd",
            "--limit",
            "20",
        ]
        figures["`python -m trainer.runs list --where optim=sgd` (whole process)"] = min(
            timed(lambda: subprocess.run(cli, check=True, capture_output=True)) for _ in range(3)
        )
        size = (root / ".runs.sqlite").stat().st_size / 1e6
    print(f"Runs index, {count} runs, {cpu()['model']}, {os.cpu_count()} cores (index file {size:.1f} MB)\n")
    print("| operation | seconds |\n|---|---|")
    for name, seconds in figures.items():
        print(f"| {name} | {seconds:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
