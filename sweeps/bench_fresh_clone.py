"""Benchmark: what a new user waits for on a fresh clone: `make test` and `make train`.

    python -m sweeps.bench_fresh_clone [--target test|train|both] [--keep DIR]

Clones this checkout (its committed HEAD) into a temporary folder and times, from there,
`make test` (creates .venv, installs everything, runs the suite) and then `make train`
(the venv exists by then, so this is the default job on a new machine: empty corpus
cache, no run directory). Prints the figures in Markdown with the machine (CPU model and
flags) and the date; the output of each command goes to `<clone>/bench-<target>.log`.
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweeps.bench_default_job import cpu

ROOT = Path(__file__).resolve().parents[1]


def timed(target: str, clone: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with open(clone / f"bench-{target}.log", "w") as log:
        rc = subprocess.run(["make", target], cwd=clone, stdout=log, stderr=subprocess.STDOUT).returncode
    return time.perf_counter() - started, rc


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweeps.bench_fresh_clone", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["test", "train", "both"], default="both")
    parser.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    parent = args.keep or Path(tempfile.mkdtemp(prefix="fresh-clone-"))
    clone = parent / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    rows = []
    for target in ["test", "train"] if args.target == "both" else [args.target]:
        seconds, rc = timed(target, clone)
        rows.append((target, seconds, rc))
    print(f"## Fresh clone of {commit}\n\nCPU: {cpu()}; {time.strftime('%Y-%m-%d')}\n")
    print("| command | wall | exit |\n|---|---|---|")
    for target, seconds, rc in rows:
        what = "install + suite" if target == "test" else ("default job" if len(rows) > 1 else "install + default job")
        print(f"| `make {target}` ({what}) | {int(seconds // 60)} min {seconds % 60:04.1f} s | {rc} |")
    print(f"\nlogs: {clone}/bench-*.log" if args.keep else "")
    if not args.keep:
        shutil.rmtree(parent, ignore_errors=True)
    sys.exit(max(rc for _, _, rc in rows))


if __name__ == "__main__":
    main(sys.argv[1:])
