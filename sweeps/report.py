"""Put the runs of a sweep side by side.

    python -m sweeps.report <multirun dir> [--baseline precision=fp32,compile=none] [--mfu]
                            [--at-epoch N|common | --at-step N]
    python -m sweeps.report --study <storage-url> <study-name> [--out DIR]   (see study_report.py)

One row per configuration: the runs the sweep's `sweep.json` lists (reused ones live in
other folders) and any job folder under the sweep dir, with the repeats of one
configuration (runs that differ only in `trainer.seed`) grouped. Columns: the swept
choices, how many runs, status, samples/s and speedup over the baseline, median step
time, data wait, peak memory, warm-up/compile time, best and final monitored metric,
time to the target value, and MFU on CUDA. A group of repeats shows mean ± sd [95% CI]
(Student t; sweeps/stats.py) for the metric, the speed and the speedup, and the rows
whose metric and speed intervals overlap its own (differences within the noise).
`--at-epoch`/`--at-step` read the metric from each run's history at that point, for runs
that ended at different points. Failed, diverged and unfinished jobs appear as such; a
sweep still running reports what it has. A warning names the commits when the rows come
from different code.

Writes report.md, report.csv, report.html (self-contained: figures inlined),
throughput.png (samples/s with speedup labels) and curves.png (validation metric over
training time) into the sweep directory, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps.stats import Estimate, estimate, ratio
from sweeps.tables import print_table, write_outputs
from trainer import summary as run_summary
from trainer.experiments.manifest import members
from trainer.files import read_json
from trainer.identity import alias_without_seed, split_alias
from trainer.provenance import code_version

# Dense peak FLOP/s by device and math mode (vendor datasheets, SXM parts).
PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}
NA = "—"


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    summary: dict[str, Any] | None
    history: list[dict[str, Any]]
    config: dict[str, Any]
    label: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.summary["status"]) if self.summary else "unfinished"

    def get(self, key: str) -> Any:
        value = (self.summary or {}).get(key)
        return None if isinstance(value, str) or value is None else value

    @property
    def experiment(self) -> dict[str, Any]:
        return (self.summary or {}).get("experiment") or {}

    @property
    def seed(self) -> int | None:
        return self.experiment.get("seed", (self.config.get("trainer") or {}).get("seed"))

    @property
    def code(self) -> str | None:
        return code_version((self.summary or {}).get("provenance"))

    def metric_at(self, epoch: int | None = None, step: int | None = None) -> tuple[float | None, float | None]:
        """(best so far, value) of the monitored metric at an epoch or step of the history;
        (None, None) when the run did not get there."""
        monitor, mode = (self.summary or {}).get("monitor"), (self.summary or {}).get("mode")
        if monitor is None:
            return None, None
        seen = [h for h in self.history if (h["epoch"] <= epoch if epoch is not None else h["step"] <= step)]
        reached = any(h["epoch"] >= epoch if epoch is not None else h["step"] >= step for h in self.history)
        values = [h[monitor] for h in seen if isinstance(h.get(monitor), (int, float))]
        if not reached or not values:
            return None, None
        best = max(values) if mode == "max" else min(values)
        return best, values[-1]


@dataclass
class Group:
    """The runs of one configuration (its repeats over seeds)."""

    runs: list[Run]
    label: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> list[float]:
        return [v for r in self.runs if (v := r.get(key)) is not None]

    def by_seed(self, key: str) -> dict[Any, float]:
        return {r.seed if r.seed is not None else i: r.get(key) for i, r in enumerate(self.runs) if r.get(key)}

    @property
    def status(self) -> str:
        if len(self.runs) == 1:
            r = self.runs[0]
            return r.status + (
                f": {r.summary['reason'][:60]}" if r.summary and r.status in ("failed", "diverged") else ""
            )
        counts = Counter(r.status for r in self.runs)
        return ", ".join(f"{n} {s}" for s, n in counts.most_common())


def load_runs(sweep_dir: Path) -> list[Run]:
    """The runs of a sweep, each labelled as the sweep planned it (its swept choices, also
    for a run reused from another folder), or by its folder's name (a search's trials)."""
    runs = []
    for job, label in members(Path(sweep_dir)).items():
        hydra_dir = job / ".hydra"
        if not hydra_dir.is_dir():
            continue
        config = yaml.safe_load((hydra_dir / "config.yaml").read_text()) or {}
        runs.append(
            Run(
                path=job,
                # the label's choices: a reused run's own overrides are those of its first launch
                overrides=dict(o.lstrip("+~").split("=", 1) for o in split_alias(label) if "=" in o),
                summary=run_summary.read(job),
                history=read_json(job / "history.json") or [],
                config=config,
                label=label,
            )
        )
    if not runs:
        raise FileNotFoundError(f"{sweep_dir}: no job directories (folders with .hydra/) found")
    return runs


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs of one configuration (same `experiment.group`: all but the seed) together, in
    the order their first run appears. Runs without an identity stay alone."""
    groups: dict[Any, Group] = {}
    for r in runs:
        key = r.experiment.get("group") or r.path
        groups.setdefault(key, Group([])).runs.append(r)
    for g in groups.values():
        g.label = g.runs[0].label if len(g.runs) == 1 else alias_without_seed(g.runs[0].label)
    return list(groups.values())


def code_warning(runs: list[Run]) -> str | None:
    """A line naming the code versions when the rows come from more than one."""
    counts = Counter(r.code for r in runs if r.summary)
    if len(counts) <= 1:
        return None
    listed = ", ".join(f"{code or 'unknown'} ({n} runs)" for code, n in counts.most_common())
    return f"warning: the rows come from different code (commit+diff): {listed}"


def speed_notes(runs: list[Run]) -> list[str]:
    """Why a run's speed is missing, and which runs were timed after a shortened warm-up."""
    short_runs = [r.label for r in runs if r.summary and r.get("warmup_steps") == 1 and r.get("samples_per_s")]
    config_warmup = next((r.config.get("trainer", {}).get("warmup_steps") for r in runs if r.config), None)
    notes = []
    if short_runs and config_warmup != 1:
        notes.append(
            f"speed of {', '.join(short_runs)}: no more steps than trainer.warmup_steps ({config_warmup}), "
            "so measured over the steps after the first"
        )
    for r in runs:
        if r.get("samples_per_s") is not None:
            continue
        if r.summary is None:
            why = "no summary.json yet (running, or ended before writing it)"
        elif not r.get("steps"):
            why = f"{r.status} before its first step"
        elif r.get("steps") == 1:
            why = "one step: nothing after the first to time"
        else:
            why = f"no log window after the warm-up ({r.get('steps')} steps, {r.status})"
        notes.append(f"no speed for {r.label}: {why}")
    return notes


def pick_baseline(groups: list[Group], spec: str) -> Group | None:
    done = [g for g in groups if g.get("samples_per_s")]
    if not done:
        return None
    wanted = {k: _norm(v) for k, v in (kv.split("=", 1) for kv in spec.split(",") if "=" in kv)}
    for g in done:
        r = g.runs[0]
        if all(_norm(r.overrides[k]) == v for k, v in wanted.items() if k in r.overrides):
            return g
    return done[0]


def _norm(value: str) -> str:
    """Override values as YAML reads them: `false`, `False` and `FALSE` are one value."""
    try:
        return str(yaml.safe_load(value))
    except yaml.YAMLError:
        return value


def flops_per_example(config: dict[str, Any]) -> float | None:
    """Model FLOPs of one training step per example (forward + backward), counted with
    torch's FlopCounterMode on the CPU. Ops without a FLOP formula (fused LSTM) count 0."""
    import torch
    from omegaconf import OmegaConf
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.build import build_model

    try:
        model = build_model(OmegaConf.create(config["model"]))
        length = int(round(config["data"]["segment_seconds"] * config["data"]["sample_rate"]))
    except Exception:
        return None
    x = torch.randn(2, length)  # 2: BatchNorm needs more than one example in training mode
    with FlopCounterMode(display=False) as counter:
        model(x).pow(2).mean().backward()
    return counter.get_total_flops() / 2


def peak_flops(device: str, config: dict[str, Any]) -> float | None:
    """The peak of the math the run actually used: autocast dtype, else TF32 when float32
    matmuls or cuDNN convolutions may use it (cudnn_tf32 is PyTorch's default), else fp32."""
    table = next((v for k, v in PEAK_FLOPS.items() if k in (device or "")), None)
    if table is None:
        return None
    precision = config.get("precision", {})
    dtype = precision.get("dtype", "float32")
    if dtype in ("bfloat16", "float16"):
        return table["bf16" if dtype == "bfloat16" else "fp16"]
    tf32 = precision.get("matmul") in ("high", "medium") or precision.get("cudnn_tf32", True)
    return table["tf32" if tf32 else "fp32"]


def tabulate(
    groups: list[Group], baseline: Group | None, mfu: bool, at: dict[str, int] | None = None
) -> tuple[list[str], list[list[str]]]:
    runs = [r for g in groups for r in g.runs]
    monitor = next((r.summary["monitor"] for r in runs if r.summary and r.summary.get("monitor")), "metric")
    where = f" @ {next(iter(at))} {next(iter(at.values()))}" if at else ""
    repeats = any(len(g.runs) > 1 for g in groups)
    columns = ["run", "status", "samples/s", "speedup", "step ms", "data wait", "peak MB", "warm-up s",
               "compile s", f"best {monitor}{where}", f"final {monitor}{where}", "to target s"]  # fmt: skip
    if baseline is None:
        columns.remove("speedup")
    if mfu:
        columns.append("MFU")
    if repeats:
        columns[1:1] = ["n"]
        columns += ["≈ metric", "≈ speed"]
    base = baseline.by_seed("samples_per_s") if baseline else {}
    flop_cache: dict[str, float | None] = {}

    def fmt(value, spec):
        if isinstance(value, Estimate):
            return value.format(spec)
        return NA if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    def mean(values):
        return statistics.fmean(values) if values else None

    for g in groups:
        if at:
            points = [r.metric_at(**at) for r in g.runs]
            best, final = estimate([p[0] for p in points if p[0] is not None]), estimate([p[1] for p in points])
        else:
            best, final = estimate(g.get("best")), estimate(g.get("final"))
        sps = estimate(g.get("samples_per_s"))
        g.values = {
            "samples_per_s": sps.mean if sps else None,
            "sps": sps,
            "best": best,
            "final": final,
            "speedup": ratio(g.by_seed("samples_per_s"), base) if base else None,
        }
    for i, g in enumerate(groups):
        sps, speedup, best = g.values["sps"], g.values["speedup"], g.values["best"]
        data_wait = mean(g.get("data_wait"))
        row = [
            g.label + (" (baseline)" if g is baseline else ""),
            g.status,
            fmt(sps, ".1f"),
            *([speedup.format(".2f", "x") if speedup else NA] if baseline is not None else []),
            fmt(mean(g.get("step_ms")), ".1f"),
            fmt(data_wait and 100 * data_wait, ".1f") + ("%" if data_wait is not None else ""),
            fmt(mean(g.get("peak_memory_mb")), ".0f"),
            fmt(mean(g.get("warmup_seconds")), ".1f"),
            fmt(mean(g.get("compile_seconds")), ".1f"),
            fmt(best, ".3f"),
            fmt(g.values["final"], ".3f"),
            fmt(mean(g.get("time_to_target")), ".1f"),
        ]
        if mfu:
            r = g.runs[0]
            key = json.dumps(r.config.get("model"), sort_keys=True) + str(r.config.get("data"))
            if key not in flop_cache:
                flop_cache[key] = flops_per_example(r.config)
            peak = peak_flops((r.summary or {}).get("device"), r.config)
            value = flop_cache[key] * sps.mean / peak if sps and peak and flop_cache[key] else None
            g.values["mfu"] = value
            row.append(fmt(value and 100 * value, ".1f") + ("%" if value else ""))
        if repeats:
            row[1:1] = [str(len(g.runs))]
            for key in ("best", "sps"):
                mine = g.values[key]
                near = [f"#{j + 1}" for j, h in enumerate(groups) if h is not g and mine and h.values[key]
                        and mine.overlaps(h.values[key])]  # fmt: skip
                row.append(", ".join(near) or (NA if not mine or mine.lo is None else "none"))
        row[0] = (f"#{i + 1} " if repeats else "") + row[0]
        g.values["row"] = row
    return columns, [g.values["row"] for g in groups]


def short(label: str) -> str:
    """`precision.cudnn_benchmark=True` -> `cudnn_benchmark=True`: figures need short labels."""
    return ",".join(
        part.split("=", 1)[0].split(".")[-1] + "=" + part.split("=", 1)[1] if "=" in part else part
        for part in label.split(",")
    )


def plot(groups: list[Group], sweep_dir: Path, baseline: Group | None) -> list[Path]:
    """throughput.png: samples/s per configuration (the 95% interval as an error bar when
    it has repeats); curves.png: the validation metric of every run over training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    runs = [r for g in groups for r in g.runs]
    ordered = sorted(groups, key=lambda g: g.values.get("samples_per_s") or 0)
    labels = [short(g.label) for g in ordered]
    width = max(9.0, 0.075 * max(len(x) for x in labels) + 6)
    fig, ax = plt.subplots(figsize=(width, 0.42 * len(ordered) + 1.6))
    values = [g.values.get("samples_per_s") or 0 for g in ordered]
    spread = [
        [v - g.values["sps"].lo, g.values["sps"].hi - v] if g.values.get("sps") and g.values["sps"].lo else [0, 0]
        for g, v in zip(ordered, values)
    ]
    colors = ["#4c72b0" if g.values.get("samples_per_s") else "#c44e52" for g in ordered]
    ax.barh(range(len(ordered)), values, color=colors, xerr=list(zip(*spread)) if spread else None, capsize=3)
    ax.set_yticks(range(len(ordered)), labels, fontsize=8)
    for i, g in enumerate(ordered):
        speedup = g.values.get("speedup")
        missing = "" if g.values.get("samples_per_s") else f"no speed ({g.status})"
        text = f"{speedup.mean:.2f}x" if speedup else missing
        ax.text(values[i] + spread[i][1], i, f" {text}", va="center", fontsize=8)
    ax.set_xlim(0, max([v + e[1] for v, e in zip(values, spread)] + [1]) * 1.15)
    ax.set_xlabel("training samples/s (median after warm-up; bars: 95% CI over seeds)")
    title = f"Throughput; speedup vs {short(baseline.label)}" if baseline else "Throughput"
    ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    paths.append(sweep_dir / "throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    monitor = next((r.summary["monitor"] for r in runs if r.summary and r.summary.get("monitor")), None)
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in runs:
        if r.history and monitor:
            ax.plot(
                [h.get("seconds", h["step"]) for h in r.history],
                [h[monitor] for h in r.history],
                marker="o",
                ms=3,
                label=short(r.label),
            )
    target = next((r.summary.get("target") for r in runs if r.summary and r.summary.get("target") is not None), None)
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target}")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"validation {monitor}")
    ax.grid(alpha=0.3)
    if any(r.history for r in runs):
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    paths.append(sweep_dir / "curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="a multirun or search directory")
    parser.add_argument("--study", nargs=2, metavar=("STORAGE_URL", "STUDY_NAME"), help="report on an Optuna study")
    parser.add_argument("--out", type=Path, help="where --study writes its files (default: current directory)")
    parser.add_argument("--baseline", default="precision=fp32,compile=none", help="k=v,... of the baseline run")
    parser.add_argument(
        "--mfu",
        action="store_true",
        help="add MFU (model FLOPs / step time / device peak); on by default for CUDA runs",
    )
    point = parser.add_mutually_exclusive_group()
    point.add_argument(
        "--at-epoch", metavar="N|common", help="the metric at this epoch ('common': the last all reached)"
    )
    point.add_argument("--at-step", type=int, metavar="N", help="the metric at the last validation at or before step N")
    args = parser.parse_args(argv)
    from sweeps import study_report

    if args.study:
        study_report.report(args.study[0], args.study[1], args.out or Path("."))
        return 0
    if args.sweep_dir is None:
        parser.error("give a sweep directory or --study STORAGE_URL STUDY_NAME")
    try:
        runs = load_runs(args.sweep_dir)
    except FileNotFoundError as err:
        parser.exit(2, f"error: {err}\n")
    at = None
    if args.at_step is not None:
        at = {"step": args.at_step}
    elif args.at_epoch is not None:
        if args.at_epoch == "common":  # the last epoch every run reached
            reached = [max((h["epoch"] for h in r.history), default=0) for r in runs if r.history]
            at = {"epoch": min(reached, default=0)}
        elif args.at_epoch.isdigit():
            at = {"epoch": int(args.at_epoch)}
        else:
            parser.error(f"--at-epoch: a number or 'common', got {args.at_epoch!r}")
    groups = group_runs(runs)
    study = study_report.locate_study(args.sweep_dir)
    # a search's trials are draws, not variants of a baseline: no baseline, no speedups
    baseline = None if study else pick_baseline(groups, args.baseline)
    known_gpu = lambda r: any(k in str((r.summary or {}).get("device")) for k in PEAK_FLOPS)  # noqa: E731
    mfu = args.mfu or any(known_gpu(r) for r in runs)
    columns, rows = tabulate(groups, baseline, mfu, at)
    figures = plot(groups, args.sweep_dir, baseline)
    device = next((r.summary.get("device") for r in runs if r.summary and r.summary.get("device")), "?")
    title = f"Sweep {args.sweep_dir.name}: {len(runs)} runs ({len(groups)} configurations) on {device}"
    warning = code_warning(runs)
    notes = [warning] if warning else []
    notes += speed_notes(runs)
    if any(len(g.runs) > 1 for g in groups):
        notes.append(
            "repeats: mean ± sd [95% CI, Student t]; speedup per seed when seeds match; "
            "≈ lists the rows whose interval overlaps this row's (a difference within the noise)"
        )
    from sweeps.listen import PAGE

    listen = args.sweep_dir / PAGE
    links = [(f"Listen to the runs: {PAGE} (the same clips through every run)", PAGE)] if listen.is_file() else []
    write_outputs(args.sweep_dir, columns, rows, figures, title, preamble="\n".join(notes), links=links)
    print(title)
    if warning:
        print(warning, file=sys.stderr)
    print_table(columns, rows)
    written = [args.sweep_dir / "report.md", args.sweep_dir / "report.csv", args.sweep_dir / "report.html", *figures]
    print(f"\nwritten: {', '.join(p.name for p in written)}")
    if listen.is_file():
        print(f"listening page: {listen}")
    else:
        print(f"listen to the runs: python -m sweeps.listen {args.sweep_dir}")
    if study:  # a search: the study's own view too
        print()
        study_report.report(*study, args.sweep_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
