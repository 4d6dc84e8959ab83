"""Benchmark: what relaunching a finished sweep costs, per launcher.

    python -m benchmarks.relaunch [--repeats 3]

Trains a 48-job sweep of a tiny job once (4 optimizers x 4 widths x 3 seeds, basic
launcher, in a temporary outputs folder), then relaunches the same command with the
basic, joblib and submitit_local launchers and times each relaunch from process start to
exit. Nothing should train: the sweeper composes each job, finds it done in the runs
index and launches none (so no worker process starts either). Target: a few seconds in
all. For scale: the first, training launch; the start-up of one Python process with
Hydra and torch; and the time Hydra itself takes to compose the 48 job configs, which
its basic sweeper does before every launch and this sweeper does instead (once). Results
as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.batch_size=2", "trainer.log_every=1",
    "trainer.warmup_steps=0", "data.segment_seconds=0.25", "data.val_size=2", "data.corpus_size=2",
    "data.noise_corpus_size=2", "data.families=[white]", "trainer.progress=none",
    "trainer.validation.slow_examples=0", "trainer.validation.media_examples=0",
]  # fmt: skip
SWEEP = ["optim=adam,adamw,sgd,radam", "model.hidden=4,6,8,10", "trainer.seed=0,1,2"]
LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib"], "submitit_local": ["hydra/launcher=submitit_local"]}


def launch(env: dict, extra: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "-m", *TINY, *SWEEP, *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"launch failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc.stderr + proc.stdout


def compose_all(env: dict) -> float:
    """Seconds to compose the 48 job configs with Hydra's compose API (in a fresh process):
    the work Hydra's own basic sweeper does before every launch (`validate_batch_is_legal`)."""
    code = f"""
import itertools, time
from hydra import compose, initialize_config_dir
from trainer.launch.startup import register
register()
grid = [[f"{{k}}={{v}}" for v in vs.split(",")] for k, vs in (s.split("=", 1) for s in {SWEEP!r})]
with initialize_config_dir({str(ROOT / "conf")!r}, version_base="1.3"):
    start = time.perf_counter()
    for job in itertools.product(*grid):
        compose("config", overrides=[*{TINY!r}, *job])
    print(time.perf_counter() - start)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    from trainer.provenance import cpu

    return cpu()["model"] or platform.processor()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relaunch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-relaunch-") as tmp:
        env = {**os.environ, "TRAINER_OUTPUTS": tmp, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
        first, _ = launch(env, [])
        summaries = list(Path(tmp).glob("multirun/*/*/summary.json"))
        assert len(summaries) == 48, f"expected 48 finished jobs, found {len(summaries)}"
        assert all(json.loads(p.read_text())["status"] == "completed" for p in summaries)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import hydra, torch"], check=True)
        imports = time.perf_counter() - start
        compose = compose_all(env)
        rows = []
        for name, extra in LAUNCHERS.items():
            times = []
            for _ in range(args.repeats):
                seconds, log = launch(env, extra)
                if "48 done (not retrained)" not in log:
                    raise SystemExit(f"{name}: the relaunch did not find all 48 jobs done:\n{log[-3000:]}")
                times.append(seconds)
            rows.append((name, statistics.median(times), min(times), max(times)))
        trained = len(list(Path(tmp).glob("multirun/*/*/summary.json")))
    print(f"Relaunch of a finished 48-job sweep, {cpu_model()}, {os.cpu_count()} cores, median of {args.repeats}\n")
    print("| launch | wall s (median) | min | max |\n|---|---|---|---|")
    print(f"| first launch (trains 48 jobs, basic) | {first:.1f} | | |")
    print(f"| `python -c 'import hydra, torch'` | {imports:.1f} | | |")
    print(f"| Hydra composing the 48 job configs (its basic sweeper does this before any launch) | {compose:.1f} | | |")
    for name, median, low, high in rows:
        print(f"| relaunch, {name} | {median:.1f} | {low:.1f} | {high:.1f} |")
    print(f"\nrun folders after all relaunches: {trained} (48: nothing was trained twice)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
