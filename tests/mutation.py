"""Mutation testing of the numerical core with cosmic-ray: each target's code is mutated
one change at a time (operators, constants, comparisons, ...), its tests run, and a
mutant the tests still pass is a survivor: a change to the code that nothing checks.

    make mutate                                   # every target; the report goes to docs/measurements/
    python -m tests.mutation losses schedules     # some targets (names below)
    python -m tests.mutation --list

Each target is a file, optionally narrowed to some of its functions (mutations outside
them are skipped), with the tests that cover it. cosmic-ray mutates the files in place,
one mutant at a time, and puts them back; run it on a clean tree and do not edit the
code while it runs. Not part of `make test`: it takes tens of minutes on 2 cores.
"""

# ruff: noqa: E501  (the targets name tests by their full ids)
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = f"{sys.executable} -m pytest -x -q -p no:cacheprovider -p no:randomly"


@dataclass
class Target:
    path: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)  # empty: the whole file
    timeout: float = 120.0


TARGETS = {
    "losses": [
        Target("losses/functional.py", ["tests/test_losses.py"]),
        Target("losses/waveform.py", ["tests/test_losses.py"]),
        Target("losses/spectral.py", ["tests/test_losses.py"]),
        Target("losses/composite.py", ["tests/test_losses.py"]),
        Target("losses/level.py", ["tests/test_losses.py", "tests/test_options.py::test_loss_terms_and_weights_make_the_total"]),
    ],
    "schedules": [Target("trainer/schedules.py", ["tests/test_options.py"])],
    "stopping": [Target("trainer/loop/stopping.py", ["tests/test_stopping.py"])],
    "identity": [
        Target("trainer/identity.py", ["tests/test_sweeps_as_experiments.py::test_two_spellings_of_one_experiment_share_a_hash_and_real_changes_do_not",
                                       "tests/test_sweeps_as_experiments.py::test_an_identity_collision_between_different_configs_is_impossible_by_construction",
                                       "tests/test_sweeps_as_experiments.py::test_equal_hashes_exactly_when_configs_are_equal_with_their_types",
                                       "tests/test_identity.py"]),
    ],
    "checkpoint": [
        Target("trainer/checkpoint.py", ["tests/test_reliability.py::test_hostile_truncated_and_foreign_checkpoints_are_refused",
                                         "tests/test_reliability.py::test_exact_resume_needs_every_restored_piece",
                                         "tests/test_loop_components.py"]),
    ],
    "train_step": [
        Target("trainer/loop/engine.py", ["tests/test_perf.py::test_accumulation_matches_one_big_batch",
                                          "tests/test_golden.py"], ["train_step"], timeout=300),
    ],
    "enhance": [
        Target("trainer/inference/enhance.py", ["tests/test_enhance.py::test_crossfades_sum_to_one_so_a_linear_model_is_chunked_exactly",
                                                "tests/test_enhance.py::test_chunks_are_joined_by_raised_cosine_crossfades_without_a_seam"],
               ["crossfade", "enhance"]),
    ],
}  # fmt: skip


def lines_of(path: Path, functions: list[str]) -> set[int]:
    """The line numbers of `functions` (top level or methods) in `path`."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in functions:
            found |= set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    missing = set(functions) - {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef,))}
    if missing:
        raise ValueError(f"{path}: no function {sorted(missing)}")
    return found


def run_target(target: Target, work: Path) -> dict:
    """Mutate one file, run its tests on every mutant; the counts and the survivors."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    config = work / "config.toml"
    session = work / f"{Path(target.path).stem}.sqlite"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{target.path}"\n'
        f"timeout = {target.timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{PYTEST} {" ".join(target.tests)}"\n'
        '[cosmic-ray.distributor]\nname = "local"\n'
    )
    subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=ROOT, check=True)
    if target.functions:
        keep = lines_of(ROOT / target.path, target.functions)
        with use_db(str(session), WorkDB.Mode.open) as db:
            for item in db.pending_work_items:
                if not any(m.start_pos[0] in keep for m in item.mutations):
                    db.set_result(
                        item.job_id,
                        WorkResult(output="outside the target's functions", worker_outcome=WorkerOutcome.SKIPPED),
                    )
    started = time.time()
    subprocess.run(["cosmic-ray", "exec", str(config), str(session)], cwd=ROOT, check=True)
    dump = subprocess.run(["cosmic-ray", "dump", str(session)], cwd=ROOT, capture_output=True, text=True, check=True)
    killed = survived = skipped = 0
    survivors = []
    for line in dump.stdout.splitlines():
        item, result = json.loads(line)
        if result is None:
            continue
        outcome, test_outcome = result.get("worker_outcome"), result.get("test_outcome")
        if outcome == "skipped":
            skipped += 1
        elif test_outcome == "survived":
            survived += 1
            m = item["mutations"][0]
            survivors.append(
                {"line": m["start_pos"][0], "operator": m["operator_name"], "diff": result.get("diff", "")}
            )
        else:  # killed by a failing test, or by a timeout or crash
            killed += 1
    return {"file": target.path, "functions": target.functions, "killed": killed, "survived": survived,
            "skipped": skipped, "seconds": round(time.time() - started), "survivors": survivors}  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--list", action="store_true", help="list the targets and their tests")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    if args.list:
        for name, targets in TARGETS.items():
            for t in targets:
                print(f"{name:11s} {t.path}{' ' + ','.join(t.functions) if t.functions else ''}: {' '.join(t.tests)}")
        return 0
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)} (python -m tests.mutation --list)")
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "losses", "trainer", "models"], cwd=ROOT,
                           capture_output=True, text=True).stdout  # fmt: skip
    if dirty.strip():
        parser.error(f"the code has uncommitted changes; mutation testing edits files in place:\n{dirty}")
    results = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        for name in args.targets or list(TARGETS):
            for target in TARGETS[name]:
                r = run_target(target, Path(tmp))
                results.append({"target": name, **r})
                tried = r["killed"] + r["survived"]
                share = f"{100 * r['killed'] / tried:.0f}%" if tried else "—"
                print(f"{name:11s} {r['file']}: {r['killed']}/{tried} killed ({share}), {r['seconds']} s", flush=True)
    killed, survived = sum(r["killed"] for r in results), sum(r["survived"] for r in results)
    print(f"total: {killed} of {killed + survived} mutants killed ({100 * killed / max(1, killed + survived):.1f}%)")
    for r in results:
        for s in r["survivors"]:
            print(f"survived: {r['file']}:{s['line']} {s['operator']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
