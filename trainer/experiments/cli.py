"""Every run under outputs/: list, filter, show, diff, and open them in TensorBoard.

    python -m trainer.runs list [--status completed] [--where optim=sgd] [--where model.hidden=64]
                                [--metric 'si_sdri>=8'] [--sort=-best] [--limit 20]
    python -m trainer.runs show <run>
    python -m trainer.runs diff <run> <run>
    python -m trainer.runs tensorboard [<sweep dir>] [list's filters] [--port 6006] [--print]
    python -m trainer.runs cancel [<sweep dir>] [list's filters] [--all]

A <run> is a run folder, a prefix of its experiment hash, its alias or any alias a sweep
planned it under (`optim=adamw`), or the overrides that made it, as typed on the command
line (`'optim=adamw data.corpus_size=32'`: composed and resolved to the experiment, as
the planner does). `--where` takes a group choice (optim=sgd) or a dotted config key
(optim.lr=0.001); `--metric` a summary figure (objective, best, final, samples_per_s,
train_seconds, steps, epochs) or a final validation metric, compared with one of
> >= < <= = !=. Runs, multiruns and searches are all listed; the index behind it
(<outputs>/.runs.sqlite) is brought up to date first. `tensorboard` starts TensorBoard on
the selected runs (a sweep's, or those the filters select), each named by its label.

Runs submitted to SLURM (hydra/launcher=slurm) are asked of the scheduler: `list` adds
its state of each run's job (PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED, ...;
GONE once SLURM forgot it) beside the run's own status, and a run whose job ended without
the run finishing is marked `failed` with SLURM's reason first. `cancel` cancels the
queued and running jobs of the selected runs (a sweep's, or those the filters select;
`--all` for every run) and marks them cancelled.

This module is a command-line tool: it may compose configs (trainer.launch), which the
experiments layer below it does not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from trainer.experiments import scheduler
from trainer.experiments.index import INCOMPLETE, Record, RunsIndex, read_run
from trainer.experiments.lock import held
from trainer.experiments.manifest import members
from trainer.identity import SHORT


def default_root() -> Path:
    return Path(os.environ.get("TRAINER_OUTPUTS", "outputs"))


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def status(index: RunsIndex, r: Record) -> str:
    """An incomplete run whose folder lock is held is running now."""
    return "running" if r.status == INCOMPLETE and held(index.root / r.path) else r.status


def table(rows: list[list[str]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def where(r: Record) -> str:
    """A run's folder, relative to the index root; only its parent when the folder is named
    by the alias (the usual case), so that a line fits a terminal."""
    path = Path(r.path)
    return f"{path.parent}/" if path.name == r.alias else r.path


def with_scheduler(root: Path, runs: list[Record]) -> dict[str, str]:
    """{run path: its SLURM job's state} for the runs submitted to SLURM, each run settled
    first (a job that ended without the run finishing makes it `failed`, with the reason)."""
    settled = scheduler.settle_all([root / r.path for r in runs if r.job])
    states = {}
    for r in runs:
        if (root / r.path) in settled:
            now, state = settled[root / r.path]
            r.status, r.reason = now.status, now.reason
            states[r.path] = state or "?"  # ?: SLURM does not answer
    return states


def cmd_list(index: RunsIndex, args) -> int:
    runs = index.select(args.status, args.where, args.metric, args.sort, args.limit)
    jobs = with_scheduler(index.root, runs)
    columns = ["status", *(["slurm"] if jobs else []), "hash", "alias", "seed", "monitor", "best", "final",
               "samples/s", "code", "in"]  # fmt: skip
    rows = [
        [status(index, r), *([jobs.get(r.path, "—")] if jobs else []), (r.hash or "")[:SHORT], r.alias, _fmt(r.seed),
         r.monitor or "—", _fmt(r.best), _fmt(r.final), _fmt(r.samples_per_s, ".1f"), r.code or "—", where(r)]
        for r in runs
    ]  # fmt: skip
    print(table(rows, columns))
    print(f"\n{len(runs)} runs under {index.root}")
    return 0


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def diff_lines(a: Record, b: Record) -> list[str]:
    lines = [f"A  {a.path}  ({a.status}, {(a.hash or '')[:SHORT]}, code {a.code})",
             f"B  {b.path}  ({b.status}, {(b.hash or '')[:SHORT]}, code {b.code})", "", "config:"]  # fmt: skip
    ca, cb = flatten(a.config), flatten(b.config)
    keys = sorted(k for k in set(ca) | set(cb) if ca.get(k, "<absent>") != cb.get(k, "<absent>"))
    lines += [f"  {k}: {json.dumps(ca.get(k, '<absent>'))} -> {json.dumps(cb.get(k, '<absent>'))}" for k in keys]
    if not keys:
        lines.append("  (identical)" if a.config and b.config else "  (one of them has no experiment.json)")
    lines += ["", "results:"]
    figures = {key: (getattr(a, key), getattr(b, key)) for key in ("best", "final", "samples_per_s", "steps")}
    figures |= {k: (a.metrics.get(k), b.metrics.get(k)) for k in sorted(set(a.metrics) | set(b.metrics))}
    rows = []
    for key, (x, y) in figures.items():
        delta = y - x if isinstance(x, (int, float)) and isinstance(y, (int, float)) else None
        rows.append([key, _fmt(x), _fmt(y), _fmt(delta, "+.4g")])
    lines += ["  " + line for line in table(rows, ["", "A", "B", "B - A"]).splitlines()]
    return lines


def resolve(index: RunsIndex, ref: str) -> Record:
    """The run `ref` names (see the module docstring). Overrides that match no alias are
    composed into a config and found by its experiment's hash."""
    words = ref.split()
    try:
        return index.lookup(ref)
    except ValueError:
        if not words or not all("=" in w for w in words):
            raise
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from trainer import identity
    from trainer.launch.startup import compose

    try:
        cfg = compose(words)
    except (HydraException, OmegaConfBaseException) as err:
        raise ValueError(f"{ref}: not a run, and these overrides do not compose: {err}") from None
    return index.experiment(identity.of(cfg, "").hash, ref)


def cmd_show(index: RunsIndex, args) -> int:
    r = resolve(index, " ".join(args.run))
    print(f"{r.path}\n  status     {status(index, r)}" + (f" ({r.reason})" if r.reason else ""))
    print(f"  experiment {r.hash}\n  group      {r.grp}\n  alias      {r.alias}\n  seed       {r.seed}")
    if r.job:
        state = with_scheduler(index.root, [r]).get(r.path, "?")
        print(f"  slurm      job {r.job}, {state}" + (f"\n  status now {r.status} ({r.reason})" if r.reason else ""))
    print(f"  code       {r.code}\n  {r.monitor or 'monitor'}  best {_fmt(r.best)}  final {_fmt(r.final)}")
    print(f"  steps      {_fmt(r.steps)} in {_fmt(r.train_seconds, '.1f')} s, {_fmt(r.samples_per_s, '.1f')} samples/s")
    for key, value in sorted(r.choices.items()):
        print(f"  {key:10s} {value}")
    return 0


def cmd_diff(index: RunsIndex, args) -> int:
    print("\n".join(diff_lines(resolve(index, args.a), resolve(index, args.b))))
    return 0


def board_names(runs: dict[str, str]) -> dict[str, str]:
    """{run folder: a TensorBoard run name}: the label, with `,` and `:` (the separators
    of --logdir_spec) as spaces and `;`, made unique with the folder's name where two agree."""
    names = {path: " ".join(label.replace(":", ";").split(",")) for path, label in runs.items()}
    seen: dict[str, int] = {}
    for name in names.values():
        seen[name] = seen.get(name, 0) + 1
    return {p: (n if seen[n] == 1 else f"{n} [{Path(p).name}]") for p, n in names.items()}


def logdir(root: Path, tb: Path) -> Path:
    """`tb`, or where its path holds `,` or `:` (the separators of --logdir_spec; folder
    names from aliases have commas) a symlink to it under `<outputs>/.tensorboard/`."""
    if "," not in str(tb) and ":" not in str(tb):
        return tb
    import hashlib

    link = root.absolute() / ".tensorboard" / hashlib.sha1(str(tb.absolute()).encode()).hexdigest()[:16]
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(tb.absolute(), target_is_directory=True)
    return link


def cmd_tensorboard(index: RunsIndex | None, args) -> int:
    """`index` is None for a sweep folder (its sweep.json names the runs)."""
    if args.sweep is not None:
        if not args.sweep.is_dir():
            raise ValueError(f"{args.sweep}: no such sweep folder")
        runs = {str(path): label for path, label in members(args.sweep).items()}
    else:
        selected = index.select(args.status, args.where, args.metric, args.sort, args.limit)
        runs = {str(index.root / r.path): r.alias for r in selected}
    runs = {path: label for path, label in runs.items() if (Path(path) / "tb").is_dir()}
    if not runs:
        raise ValueError("no selected run has TensorBoard logs (tb/)")
    links = index.root if index is not None else args.sweep  # where a symlink goes, if one is needed
    spec = ",".join(f"{name}:{logdir(links, Path(path) / 'tb')}" for path, name in board_names(runs).items())
    command = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", spec, "--port", str(args.port)]
    if args.host:
        command += ["--host", args.host]
    print(" ".join(command) if args.print else f"TensorBoard on {len(runs)} runs: http://localhost:{args.port}/")
    if args.print:
        return 0
    import subprocess

    return subprocess.call(command)


def cmd_cancel(index: RunsIndex | None, args) -> int:
    """`index` is None for a sweep folder (its sweep.json names the runs)."""
    if args.sweep is not None:
        if not args.sweep.is_dir():
            raise ValueError(f"{args.sweep}: no such sweep folder")
        root, runs = Path("."), [read_run(path, name=str(path)) for path in members(args.sweep)]
    else:
        if not (args.all or args.status or args.where or args.metric or args.limit):
            raise ValueError("cancel which runs? give a sweep folder, a filter (--where, --status, ...), or --all")
        assert index is not None
        root, runs = index.root, index.select(args.status, args.where, args.metric, args.sort, args.limit)
    runs = [r for r in runs if r.job]
    now = scheduler.states([r.job for r in runs if r.job])
    if now is None:
        raise ValueError("SLURM does not answer (squeue failed): nothing was cancelled")
    active = {root / r.path: r.job for r in runs if r.job and now.get(r.job) in scheduler.ACTIVE}
    if not active:
        print(f"no selected run has a job in the SLURM queue ({len(runs)} were submitted to SLURM)")
        return 0
    scheduler.cancel(active)  # type: ignore[arg-type]
    scheduler.wait_until_ended(list(active.values()))
    settled = scheduler.settle_all(list(active))
    rows = []
    for folder, job in active.items():
        r, state = settled.get(folder, (read_run(folder), None))
        rows.append([r.status, state or "?", r.alias, str(job), r.reason])
    print(table(rows, ["status", "slurm", "alias", "job", "reason"]))
    print(f"\ncancelled {len(active)} SLURM job(s)")
    return 0


def add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", action="append", help="completed, failed, diverged, incomplete, ... (repeatable)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="a choice or config value")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME>X", help="a summary figure or metric")
    parser.add_argument("--sort", help="a figure or metric; -name sorts descending")
    parser.add_argument("--limit", type=int)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=default_root(), help="the outputs folder (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_filters(sub.add_parser("list", help="list and filter runs"))
    show = sub.add_parser("show", help="one run's identity, status and results")
    show.add_argument("run", nargs="+", help="a folder, hash prefix, alias, or overrides")
    diff = sub.add_parser("diff", help="config and result differences of two runs")
    diff.add_argument("a", help="a folder, hash prefix, alias, or overrides (quoted together)")
    diff.add_argument("b")
    board = sub.add_parser("tensorboard", help="TensorBoard on a sweep's runs or the filtered ones, named by label")
    board.add_argument("sweep", nargs="?", type=Path, help="a sweep folder (default: the runs the filters select)")
    add_filters(board)
    board.add_argument("--port", type=int, default=6006)
    board.add_argument("--host", help="the address to bind (TensorBoard's default: localhost)")
    board.add_argument("--print", action="store_true", help="print the TensorBoard command instead of running it")
    cancel = sub.add_parser("cancel", help="cancel the SLURM jobs of a sweep's runs or the filtered ones")
    cancel.add_argument("sweep", nargs="?", type=Path, help="a sweep folder (default: the runs the filters select)")
    add_filters(cancel)
    cancel.add_argument("--all", action="store_true", help="every run's job, when no filter is given")
    args = parser.parse_args(argv)
    if args.command in ("tensorboard", "cancel") and args.sweep is not None:  # a sweep folder needs no index
        try:
            return (cmd_tensorboard if args.command == "tensorboard" else cmd_cancel)(None, args)
        except ValueError as err:
            parser.exit(2, f"error: {err}\n")
    if not args.root.is_dir():
        parser.exit(2, f"error: {args.root}: no such folder (--root, or TRAINER_OUTPUTS)\n")
    index = RunsIndex(args.root).refresh()
    try:
        verbs = {"list": cmd_list, "show": cmd_show, "diff": cmd_diff, "tensorboard": cmd_tensorboard,
                 "cancel": cmd_cancel}  # fmt: skip
        return verbs[args.command](index, args)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    finally:
        index.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
