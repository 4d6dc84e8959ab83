"""Benchmark: what a new user waits for on a fresh clone: `make test` and `make train`.

    python -m benchmarks.fresh_clone [--target test|train|both] [--cap-isa avx2] [--keep DIR]

Clones this checkout (its committed HEAD) into a temporary folder and times, from there,
`make test` (creates .venv, installs everything, runs the suite) and then `make train`
(the venv exists by then, so this is the default job on a new machine: empty corpus
cache, no run directory). Prints the figures in Markdown with the machine (CPU model and
flags) and the date. `--cap-isa avx2` runs both as on a CPU without AVX-512 (see
`python -m benchmarks.default_job`). The output of each command goes to
`<clone>/bench-<target>.log`. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import CAPS, machine

ROOT = Path(__file__).resolve().parents[1]


def timed(target: str, clone: Path, env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    with open(clone / f"bench-{target}.log", "w") as log:
        rc = subprocess.run(["make", target], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    return time.perf_counter() - started, rc


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fresh_clone", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["test", "train", "both"], default="both")
    parser.add_argument(
        "--cap-isa", choices=sorted(CAPS), help="run with the CPU's kernels capped at this instruction set"
    )
    parser.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    parent = args.keep or Path(tempfile.mkdtemp(prefix="fresh-clone-"))
    clone = parent / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
    ).stdout.strip()
    rows = []
    for target in ["test", "train"] if args.target == "both" else [args.target]:
        # a new machine has no compiled graphs either: inductor's cache starts empty
        env = {**os.environ, **CAPS.get(args.cap_isa, {}), "TORCHINDUCTOR_CACHE_DIR": str(parent / "inductor-cache")}
        seconds, rc = timed(target, clone, env)
        rows.append((target, seconds, rc))
    capped = f"; kernels capped at {args.cap_isa} ({CAPS[args.cap_isa]})" if args.cap_isa else ""
    print(f"## Fresh clone of {commit}\n\nCPU: {machine()}{capped}; {time.strftime('%Y-%m-%d')}\n")
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
