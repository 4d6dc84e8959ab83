"""Put the runs of a sweep side by side.

    python -m sweeps.report <multirun dir> [--baseline precision=fp32,compile=none] [--mfu]
    python -m sweeps.report --study <storage-url> <study-name> [--out DIR]   (see study_report.py)

One row per job directory (any folder under the sweep dir holding `.hydra/`): the swept
choices (the overrides whose values differ between jobs), status, samples/s and speedup
over the baseline run, median step time, data wait, peak memory, warm-up/compile time,
best and final monitored metric, time to the target value, and MFU on CUDA. Failed,
diverged and unfinished jobs appear as such; a sweep still running reports what it has.

Writes report.md, report.csv, report.html (self-contained: figures inlined),
throughput.png (samples/s with speedup labels) and curves.png (validation metric over
training time) into the sweep directory, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps.tables import print_table, write_outputs
from trainer import summary as run_summary

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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_runs(sweep_dir: Path) -> list[Run]:
    runs = []
    for hydra_dir in sorted(Path(sweep_dir).rglob(".hydra")):
        job = hydra_dir.parent
        if job == Path(sweep_dir):
            continue
        overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
        config = yaml.safe_load((hydra_dir / "config.yaml").read_text()) or {}
        runs.append(
            Run(
                path=job,
                overrides=dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o),
                summary=run_summary.read(job),
                history=_read_json(job / "history.json") or [],
                config=config,
            )
        )
    if not runs:
        raise FileNotFoundError(f"{sweep_dir}: no job directories (folders with .hydra/) found")
    keys = sorted({k for r in runs for k in r.overrides})
    swept = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1] or keys
    for r in runs:
        if "optuna.trial_number" in r.overrides:  # a search: its trial folder names the run
            r.label = r.path.name
            continue
        r.label = ",".join(f"{k}={r.overrides[k]}" for k in swept if k in r.overrides) or r.path.name
    return runs


def pick_baseline(runs: list[Run], spec: str) -> Run | None:
    done = [r for r in runs if r.get("samples_per_s")]
    if not done:
        return None
    wanted = {k: _norm(v) for k, v in (kv.split("=", 1) for kv in spec.split(",") if "=" in kv)}
    for r in done:
        if all(_norm(r.overrides[k]) == v for k, v in wanted.items() if k in r.overrides):
            return r
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


def tabulate(runs: list[Run], baseline: Run | None, mfu: bool) -> tuple[list[str], list[list[str]]]:
    monitor = next((r.summary["monitor"] for r in runs if r.summary and r.summary.get("monitor")), "metric")
    columns = ["run", "status", "samples/s", "speedup", "step ms", "data wait", "peak MB", "warm-up s",
               "compile s", f"best {monitor}", f"final {monitor}", "to target s"]  # fmt: skip
    if mfu:
        columns.append("MFU")
    base = baseline.get("samples_per_s") if baseline else None
    rows = []
    flop_cache: dict[str, float | None] = {}

    def fmt(value, spec):
        return NA if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    for r in runs:
        sps = r.get("samples_per_s")
        r.values = {
            "samples_per_s": sps,
            "speedup": sps / base if sps and base else None,
        }
        row = [
            r.label + (" (baseline)" if r is baseline else ""),
            r.status + (f": {r.summary['reason'][:60]}" if r.summary and r.status in ("failed", "diverged") else ""),
            fmt(sps, ".1f"),
            fmt(r.values["speedup"], ".2f") + ("x" if r.values["speedup"] else ""),
            fmt(r.get("step_ms"), ".1f"),
            fmt(r.get("data_wait") and 100 * r.get("data_wait"), ".1f")
            + ("%" if r.get("data_wait") is not None else ""),
            fmt(r.get("peak_memory_mb"), ".0f"),
            fmt(r.get("warmup_seconds"), ".1f"),
            fmt(r.get("compile_seconds"), ".1f"),
            fmt(r.get("best"), ".3f"),
            fmt(r.get("final"), ".3f"),
            fmt(r.get("time_to_target"), ".1f"),
        ]
        if mfu:
            key = json.dumps(r.config.get("model"), sort_keys=True) + str(r.config.get("data"))
            if key not in flop_cache:
                flop_cache[key] = flops_per_example(r.config)
            peak = peak_flops((r.summary or {}).get("device"), r.config)
            value = flop_cache[key] * sps / peak if sps and peak and flop_cache[key] else None
            r.values["mfu"] = value
            row.append(fmt(value and 100 * value, ".1f") + ("%" if value else ""))
        rows.append(row)
    return columns, rows


def short(label: str) -> str:
    """`precision.cudnn_benchmark=True` -> `cudnn_benchmark=True`: figures need short labels."""
    return ",".join(
        part.split("=", 1)[0].split(".")[-1] + "=" + part.split("=", 1)[1] if "=" in part else part
        for part in label.split(",")
    )


def plot(runs: list[Run], sweep_dir: Path, baseline: Run | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    ordered = sorted(runs, key=lambda r: r.values.get("samples_per_s") or 0)
    labels = [short(r.label) for r in ordered]
    width = max(9.0, 0.075 * max(len(x) for x in labels) + 6)
    fig, ax = plt.subplots(figsize=(width, 0.42 * len(runs) + 1.6))
    values = [r.values.get("samples_per_s") or 0 for r in ordered]
    colors = ["#4c72b0" if r.values.get("samples_per_s") else "#c44e52" for r in ordered]
    ax.barh(range(len(ordered)), values, color=colors)
    ax.set_yticks(range(len(ordered)), labels, fontsize=8)
    for i, r in enumerate(ordered):
        text = f"{r.values['speedup']:.2f}x" if r.values.get("speedup") else f"no throughput ({r.status})"
        ax.text(values[i], i, f" {text}", va="center", fontsize=8)
    ax.set_xlim(0, max(values + [1]) * 1.15)
    ax.set_xlabel("training samples/s (median after warm-up)")
    ax.set_title(f"Throughput; speedup vs {short(baseline.label) if baseline else 'n/a'}", fontsize=9, loc="left")
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
    baseline = pick_baseline(runs, args.baseline)
    known_gpu = lambda r: any(k in str((r.summary or {}).get("device")) for k in PEAK_FLOPS)  # noqa: E731
    mfu = args.mfu or any(known_gpu(r) for r in runs)
    columns, rows = tabulate(runs, baseline, mfu)
    figures = plot(runs, args.sweep_dir, baseline)
    device = next((r.summary.get("device") for r in runs if r.summary and r.summary.get("device")), "?")
    title = f"Sweep {args.sweep_dir.name}: {len(runs)} runs on {device}"
    write_outputs(args.sweep_dir, columns, rows, figures, title)
    print(title)
    print_table(columns, rows)
    written = [args.sweep_dir / "report.md", args.sweep_dir / "report.csv", args.sweep_dir / "report.html", *figures]
    print(f"\nwritten: {', '.join(p.name for p in written)}")
    study = study_report.locate_study(args.sweep_dir)
    if study:  # a search: the study's own view too
        print()
        study_report.report(*study, args.sweep_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
