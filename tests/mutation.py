"""Mutation testing of the numerical core: each target's code is mutated one change at a
time (operators, constants, comparisons, ...; cosmic-ray makes the mutants), its tests run,
and a mutant the tests still pass is a survivor: a change to the code that nothing checks.

    make mutate                                   # every target; the results in mutation.json
    python -m tests.mutation losses schedules     # some targets (names below)
    python -m tests.mutation --list
    python -m tests.mutation -j 2 enhance         # two mutants at a time (default: one per core)

Each target is a file, optionally narrowed to some of its functions (mutants outside them
are left out), with the tests that cover it. The mutants run in worker checkouts (git
worktrees of the tree as it is, uncommitted changes and new files included, removed at
the end), never
in this tree, so the code may be edited while it runs and a killed run leaves nothing
behind. Each mutant's tests run in a process
forked from one that has already imported torch and the other libraries: a mutant costs
its tests' time, not an interpreter start (tests that start the CLI in a subprocess see
the mutant too: it is on the worker checkout's disk). Not part of `make test`.
"""

# ruff: noqa: E501  (the targets name tests by their full ids)
from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Imported once by the parent, so that a forked mutant starts with them loaded. Never the
# project's own packages: each mutant must import its target from its worker checkout.
PRELOAD = ["numpy", "scipy.signal", "torch", "torchaudio", "soundfile", "omegaconf", "hydra", "optuna",
           "torch.utils.tensorboard", "pytest", "_pytest.config"]  # fmt: skip
PROJECT = ("trainer", "losses", "models", "sweeps", "benchmarks", "tests")
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]


@dataclass
class Target:
    path: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)  # empty: the whole file


OPTIONS = "tests/test_options.py::"
TARGETS = {
    "losses": [
        Target("losses/functional.py", ["tests/test_losses.py"]),
        Target("losses/waveform.py", ["tests/test_losses.py"]),
        Target("losses/spectral.py", ["tests/test_losses.py"]),
        Target("losses/composite.py", ["tests/test_losses.py"]),
        Target("losses/level.py", ["tests/test_losses.py", OPTIONS + "test_loss_terms_and_weights_make_the_total"]),
    ],
    "schedules": [Target("trainer/schedules.py", [OPTIONS + t for t in (
        "test_cosine_follows_its_formula", "test_one_cycle_starts_low_peaks_at_the_optimizer_lr_and_ends_near_zero",
        "test_plateau_halves_the_rate_after_patience_validations_without_improvement", "test_none_keeps_the_rate",
        "test_a_schedule_restored_from_its_state_goes_on_where_it_was")])],
    "stopping": [Target("trainer/loop/stopping.py", ["tests/test_stopping.py"])],
    "identity": [
        Target("trainer/identity.py", ["tests/test_identity.py",
                                       "tests/test_sweeps_as_experiments.py::test_two_spellings_of_one_experiment_share_a_hash_and_real_changes_do_not",
                                       "tests/test_sweeps_as_experiments.py::test_an_identity_collision_between_different_configs_is_impossible_by_construction",
                                       "tests/test_sweeps_as_experiments.py::test_equal_hashes_exactly_when_configs_are_equal_with_their_types"]),
    ],
    "checkpoint": [
        Target("trainer/checkpoint.py", ["tests/test_loop_components.py::test_the_checkpointer_is_due_every_n_steps_except_at_an_epoch_end",
                                         "tests/test_loop_components.py::test_the_checkpointer_writes_last_and_best_only_where_it_writes",
                                         "tests/test_reliability.py::test_hostile_truncated_and_foreign_checkpoints_are_refused",
                                         "tests/test_reliability.py::test_exact_resume_needs_every_restored_piece",
                                         "tests/test_reliability.py::test_only_this_trainers_format_with_weights_loads_and_the_refusal_says_why",
                                         "tests/test_reliability.py::test_a_config_change_is_listed_key_by_key_except_what_a_resume_may_change",
                                         "tests/test_reliability.py::test_optimizer_or_schedule_state_of_another_shape_is_refused_by_name"]),
    ],
    "train_step": [
        Target("trainer/loop/engine.py", ["tests/test_perf.py::test_accumulation_matches_one_big_batch",
                                          "tests/test_golden.py",
                                          "tests/test_perf.py::test_fp16_skipped_step_does_not_advance_the_schedule",
                                          "tests/test_perf.py::test_under_ddp_every_micro_batch_but_the_last_skips_the_gradient_all_reduce",
                                          "tests/test_diagnostics.py::test_training_run_logs_terms_layers_ratios_and_histograms"],
               ["train_step"]),
    ],
    "enhance": [
        Target("trainer/inference/enhance.py", ["tests/test_enhance.py::test_crossfades_sum_to_one_so_a_linear_model_is_chunked_exactly",
                                                "tests/test_enhance.py::test_chunks_start_every_step_the_last_padded_in_batches_and_a_short_signal_whole",
                                                "tests/test_enhance.py::test_chunks_are_joined_by_raised_cosine_crossfades_without_a_seam"],
               ["crossfade", "enhance"]),
    ],
}  # fmt: skip


@dataclass
class Mutant:
    target: Target
    operator: str
    occurrence: int
    line: int
    code: str  # the whole mutated file
    diff: str = ""


def lines_of(path: Path, functions: list[str]) -> set[int]:
    """The line numbers of `functions` (top level or methods) in `path`."""
    tree = ast.parse(path.read_text())
    defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    missing = set(functions) - {n.name for n in defs}
    if missing:
        raise ValueError(f"{path}: no function {sorted(missing)}")
    return {i for n in defs if n.name in functions for i in range(n.lineno, (n.end_lineno or n.lineno) + 1)}


def annotations_of(path: Path) -> list[tuple[int, int, int, int]]:
    """The (line, column) positions inside type annotations: with `from __future__ import
    annotations` they are strings Python never evaluates, so a mutant there is equivalent."""
    tree = ast.parse(path.read_text())
    spans = []
    for node in ast.walk(tree):
        parts = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts = [a.annotation for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                                            node.args.vararg, node.args.kwarg] if a is not None] + [node.returns]  # fmt: skip
        elif isinstance(node, ast.AnnAssign):
            parts = [node.annotation]
        spans += [(a.lineno, a.col_offset, a.end_lineno, a.end_col_offset) for a in parts if a is not None]
    return spans


def in_annotation(position: tuple[int, int], spans) -> bool:
    return any((l0, c0) <= tuple(position) < (l1, c1) for l0, c0, l1, c1 in spans)


def mutants_of(target: Target, work: Path) -> list[Mutant]:
    """cosmic-ray's mutants of the target's file (those inside its functions, if named),
    without those in type annotations (see `annotations_of`)."""
    import difflib

    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator
    from cosmic_ray.work_db import WorkDB, use_db

    config, session = work / "config.toml", work / f"{Path(target.path).stem}.sqlite"
    config.write_text(f'[cosmic-ray]\nmodule-path = "{target.path}"\ntimeout = 1\nexcluded-modules = []\n'
                      'test-command = "false"\n[cosmic-ray.distributor]\nname = "local"\n')  # fmt: skip
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "init", str(config), str(session)], cwd=ROOT,
                   check=True, capture_output=True)  # fmt: skip
    source = (ROOT / target.path).read_text()
    keep = lines_of(ROOT / target.path, target.functions) if target.functions else None
    lazy = "from __future__ import annotations" in source
    spans = annotations_of(ROOT / target.path) if lazy else []
    found = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            (m,) = item.mutations
            if keep is not None and m.start_pos[0] not in keep or in_annotation(m.start_pos, spans):
                continue
            try:
                code = mutate_code(source, get_operator(m.operator_name)(**(m.operator_args or {})), m.occurrence)
            except AttributeError:  # cosmic-ray 8.x cannot rewrite `except (A, B)`'s names: no mutant
                continue
            if code is None or code == source:
                continue
            lines = difflib.unified_diff(source.splitlines(True), code.splitlines(True), n=0)
            diff = "".join(d for d in lines if d[:1] in "+-" and d[:3] not in ("+++", "---"))
            found.append(Mutant(target, m.operator_name, m.occurrence, m.start_pos[0], code, diff.strip()))
    return found


class Worker:
    """One checkout of the code in which one mutant at a time is written and tested."""

    def __init__(self, index: int, base: Path, commit: str, untracked: list[str]):
        self.index, self.tree, self.tmp = index, base / f"tree{index}", base / f"tmp{index}"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(self.tree), commit], cwd=ROOT, check=True)
        for name in untracked:  # new files not yet added: the tree as it is
            (self.tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, self.tree / name)
        self.pid, self.mutant, self.started = 0, None, 0.0

    def _write(self, relative: str, code: str) -> None:
        path = self.tree / relative
        path.write_text(code)
        for stale in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
            stale.unlink()  # a cached compile of another mutant with the same size and second

    def start(self, mutant: Mutant | None, target: Target, threads: int) -> None:
        """Fork a process that runs `target`'s tests in this checkout (`mutant` written first)."""
        if mutant is not None:
            self._write(target.path, mutant.code)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self.mutant, self.started = mutant, time.time()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            code = 3
            try:
                os.setpgid(0, 0)  # its own group, so a timeout kills the CLI runs it started too
                log = os.open(self.tmp / "pytest.log", os.O_WRONLY | os.O_CREAT)
                os.dup2(log, 1), os.dup2(log, 2)
                os.chdir(self.tree)
                os.environ.update(TMPDIR=str(self.tmp), PYTEST_XDIST_WORKER_COUNT=str(threads),
                                  PYTHONPATH=str(self.tree))  # fmt: skip
                tempfile.tempdir = str(self.tmp)
                sys.path.insert(0, str(self.tree))
                for name in [n for n in sys.modules if n.split(".")[0] in PROJECT]:
                    del sys.modules[name]  # this driver's own package, `tests`: the checkout's instead
                import pytest

                code = int(pytest.main([*PYTEST_ARGS, *target.tests]))
            finally:
                os._exit(code)

    def finish(self, target: Target) -> None:
        if self.mutant is not None:
            self._write(target.path, (ROOT / target.path).read_text())
        self.pid = 0

    def log(self) -> str:
        return (self.tmp / "pytest.log").read_text(errors="replace")

    def remove(self) -> None:
        if self.pid:
            try:
                os.killpg(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        subprocess.run(["git", "worktree", "remove", "--force", str(self.tree)], cwd=ROOT, check=False)


def run_target(target: Target, workers: list[Worker], work: Path) -> dict:
    """Run the target's tests once on the code as it is (they must pass, and set the
    timeout), then on every mutant; the counts and the survivors."""
    threads = len(workers)
    first = workers[0]
    first.start(None, target, threads)
    _, status = os.waitpid(first.pid, 0)
    baseline = time.time() - first.started
    first.finish(target)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{target.path}: its tests fail on the unmutated code:\n{first.log()[-3000:]}")
    timeout = 3 * baseline + 10
    pending = mutants_of(target, work)
    total, started = len(pending), time.time()
    killed, timed_out, survivors = 0, 0, []
    while pending or any(w.pid for w in workers):
        for w in workers:
            if not w.pid and pending:
                w.start(pending.pop(0), target, threads)
        time.sleep(0.05)
        for w in workers:
            if not w.pid:
                continue
            done, status = os.waitpid(w.pid, os.WNOHANG)
            if not done and time.time() - w.started > timeout:
                os.killpg(w.pid, signal.SIGKILL)
                done, status = os.waitpid(w.pid, 0)
                timed_out += 1
                killed += 1
            elif done:
                code = os.waitstatus_to_exitcode(status)
                if code == 0:
                    m = w.mutant
                    survivors.append({"line": m.line, "operator": m.operator, "diff": m.diff})
                elif code in (1, 2, 3, 4) or code < 0:  # a test failed; the mutant broke collection or crashed it
                    killed += 1
                else:
                    raise SystemExit(f"{target.path}: pytest exited {code} on a mutant:\n{w.log()[-3000:]}")
            if done:
                w.finish(target)
    survived = len(survivors)
    assert killed + survived == total
    return {"file": target.path, "functions": target.functions, "mutants": total, "killed": killed,
            "timed_out": timed_out, "survived": survived, "seconds": round(time.time() - started),
            "baseline_seconds": round(baseline, 1), "survivors": sorted(survivors, key=lambda s: s["line"])}  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--list", action="store_true", help="list the targets and their tests")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--file", action="append", help="only this file of the targets (repeatable)")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    args = parser.parse_args(argv)
    if args.list:
        for name, targets in TARGETS.items():
            for t in targets:
                print(f"{name:11s} {t.path}{' ' + ','.join(t.functions) if t.functions else ''}: {' '.join(t.tests)}")
        return 0
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)} (python -m tests.mutation --list)")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: at least 1")
    # The workers check out the tree as it is, uncommitted changes included (a commit that
    # `git stash create` makes without touching the tree or the stash; HEAD when clean),
    # and new files that git does not ignore copied in.
    git = dict(cwd=ROOT, capture_output=True, text=True, check=True)
    commit = subprocess.run(["git", "stash", "create"], **git).stdout.strip() or "HEAD"
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], **git).stdout.split()
    for name in PRELOAD:
        importlib.import_module(name)
    results = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        workers = []
        try:
            workers = [Worker(i, Path(tmp), commit, untracked) for i in range(args.jobs)]
            for name in args.targets or list(TARGETS):
                for target in TARGETS[name]:
                    if args.file and target.path not in args.file:
                        continue
                    r = run_target(target, workers, Path(tmp))
                    results.append({"target": name, **r})
                    share = f"{100 * r['killed'] / r['mutants']:.0f}%" if r["mutants"] else "—"
                    print(
                        f"{name:11s} {r['file']}: {r['killed']}/{r['mutants']} killed ({share}), {r['seconds']} s",
                        flush=True,
                    )
                    if args.json:  # after each target, so an interrupted run keeps what it measured
                        args.json.write_text(json.dumps(results, indent=1) + "\n")
        finally:
            for w in workers:
                w.remove()
    killed, total = sum(r["killed"] for r in results), sum(r["mutants"] for r in results)
    print(f"total: {killed} of {total} mutants killed ({100 * killed / max(1, total):.1f}%)")
    for r in results:
        for s in r["survivors"]:
            print(f"survived: {r['file']}:{s['line']} {s['operator']}: {s['diff']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
