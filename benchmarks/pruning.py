"""Benchmark: what pruning saves in an Optuna search, and what the sampler costs.

    python -m benchmarks.pruning [--trials 24] [--repeats 3]

The same search (conf/search/tiny.yaml: learning rate, width, depth of the LSTM model on a
small version of the embedded task, 9 epochs per trial) runs with successive-halving
pruning and without, for several sampler seeds. Reported: total epochs trained and the best value of each study;
the noise of "best value" is its spread over the seeds. Target: >= 3x fewer epochs with
pruning for a best value within that noise. Also the sweeper's own time per trial
(sampling and storage, `sampler_seconds`) against the shortest trial. Markdown output.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer import summary as run_summary

ROOT = Path(__file__).resolve().parents[1]


def study_run(tmp: Path, name: str, pruner: str, seed: int, trials: int, reduction: int) -> dict:
    import optuna

    storage = f"sqlite:///{tmp}/{name}.db"
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "+search=tiny",
            f"optuna/pruner={pruner}",
            "trainer.progress=none",
            *([f"optuna.pruner.reduction_factor={reduction}"] if pruner == "successive_halving" else []),
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.sampler.seed={seed}",
            f"hydra.sweeper.storage={storage}",
            f"hydra.sweeper.study_name={name}",
            f"hydra.sweep.dir={tmp}/{name}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    wall = time.perf_counter() - start
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    epochs = sum(run_summary.read(Path(t.user_attrs["run_dir"]))["epochs"] for t in done)
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    sampler = [t.system_attrs.get("sampler_seconds", 0.0) for t in done]
    return {
        "best": study.best_value,
        "epochs": epochs,
        "wall": wall,
        "pruned": sum(t.state.name == "PRUNED" for t in done),
        "trials": len(done),
        "min_trial_s": min(durations),
        "sampler_max_s": max(sampler),
        "sampler_mean_s": statistics.mean(sampler),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pruning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reduction", type=int, default=3, help="successive halving's reduction factor")
    args = parser.parse_args(argv)
    rows = {"successive_halving": [], "none": []}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for seed in range(args.repeats):
            for pruner in rows:
                rows[pruner].append(study_run(tmp, f"{pruner}_{seed}", pruner, seed, args.trials, args.reduction))
    print(
        f"## Pruning benchmark: {args.trials} trials x {args.repeats} sampler seeds, up to 9 epochs per trial, "
        f"reduction factor {args.reduction}\n"
    )
    print(
        "| pruner | seed | trials (pruned) | epochs trained | best SI-SDR | wall s | shortest trial s "
        "| sampler s/trial (mean, max) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for pruner, results in rows.items():
        for seed, r in enumerate(results):
            print(
                f"| {pruner} | {seed} | {r['trials']} ({r['pruned']}) | {r['epochs']} | {r['best']:.2f} "
                f"| {r['wall']:.0f} | {r['min_trial_s']:.2f} "
                f"| {r['sampler_mean_s'] * 1000:.1f} ms, {r['sampler_max_s'] * 1000:.1f} ms |"
            )
    p, n = rows["successive_halving"], rows["none"]
    ratio = statistics.mean(r["epochs"] for r in n) / statistics.mean(r["epochs"] for r in p)
    best_p, best_n = [r["best"] for r in p], [r["best"] for r in n]
    noise = statistics.pstdev(best_n) if len(best_n) > 1 else float("nan")
    overhead = max(r["sampler_max_s"] / r["min_trial_s"] for r in p + n)
    print(f"\n* epochs, no pruning / pruning: **{ratio:.1f}x** (target >= 3x)")
    mean_p, mean_n = statistics.mean(best_p), statistics.mean(best_n)
    print(
        f"* best value, mean over seeds: pruning {mean_p:.2f}, no pruning {mean_n:.2f} "
        f"(difference {mean_p - mean_n:+.2f} dB; seed-to-seed std without pruning {noise:.2f} dB)"
    )
    print(f"* sampler time per trial, worst case / shortest trial: **{100 * overhead:.2f}%** (target < 1%)")


if __name__ == "__main__":
    main(sys.argv[1:])
