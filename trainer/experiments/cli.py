"""Every run under outputs/: list, filter, show, diff.

    python -m trainer.runs list [--status completed] [--where optim=sgd] [--where model.hidden=64]
                                [--metric 'si_sdri>=8'] [--sort=-best] [--limit 20]
    python -m trainer.runs show <run>
    python -m trainer.runs diff <run> <run>

A <run> is a run folder, a prefix of its experiment hash, or its alias. `--where` takes a
group choice (optim=sgd) or a dotted config key (optim.lr=0.001); `--metric` a summary
figure (objective, best, final, samples_per_s, train_seconds, steps, epochs) or a final
validation metric, compared with one of > >= < <= = !=. Runs, multiruns and searches are
all listed; the index behind it (<outputs>/.runs.sqlite) is brought up to date first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from trainer.experiments.index import INCOMPLETE, Record, RunsIndex
from trainer.experiments.lock import held
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


def cmd_list(index: RunsIndex, args) -> int:
    runs = index.select(args.status, args.where, args.metric, args.sort, args.limit)
    columns = ["status", "hash", "alias", "seed", "monitor", "best", "final", "samples/s", "code", "path"]
    rows = [
        [status(index, r), (r.hash or "")[:SHORT], r.alias, _fmt(r.seed), r.monitor or "—", _fmt(r.best),
         _fmt(r.final), _fmt(r.samples_per_s, ".1f"), r.code or "—", r.path]
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


def cmd_show(index: RunsIndex, args) -> int:
    r = index.lookup(args.run)
    print(f"{r.path}\n  status     {status(index, r)}" + (f" ({r.reason})" if r.reason else ""))
    print(f"  experiment {r.hash}\n  group      {r.grp}\n  alias      {r.alias}\n  seed       {r.seed}")
    print(f"  code       {r.code}\n  {r.monitor or 'monitor'}  best {_fmt(r.best)}  final {_fmt(r.final)}")
    print(f"  steps      {_fmt(r.steps)} in {_fmt(r.train_seconds, '.1f')} s, {_fmt(r.samples_per_s, '.1f')} samples/s")
    for key, value in sorted(r.choices.items()):
        print(f"  {key:10s} {value}")
    return 0


def cmd_diff(index: RunsIndex, args) -> int:
    print("\n".join(diff_lines(index.lookup(args.a), index.lookup(args.b))))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=default_root(), help="the outputs folder (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list and filter runs")
    ls.add_argument("--status", action="append", help="completed, failed, diverged, incomplete, ... (repeatable)")
    ls.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="a choice or config value")
    ls.add_argument("--metric", action="append", default=[], metavar="NAME>X", help="a summary figure or metric")
    ls.add_argument("--sort", help="a figure or metric; -name sorts descending")
    ls.add_argument("--limit", type=int)
    show = sub.add_parser("show", help="one run's identity, status and results")
    show.add_argument("run")
    diff = sub.add_parser("diff", help="config and result differences of two runs")
    diff.add_argument("a")
    diff.add_argument("b")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.exit(2, f"error: {args.root}: no such folder (--root, or TRAINER_OUTPUTS)\n")
    index = RunsIndex(args.root).refresh()
    try:
        return {"list": cmd_list, "show": cmd_show, "diff": cmd_diff}[args.command](index, args)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    finally:
        index.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
