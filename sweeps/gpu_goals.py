"""The GPU throughput goals for the reduced-precision, compiled step, read off a sweep report.

    python -m sweeps.gpu_goals <report.csv or sweep dir> [--model conv]

Reads the `report.csv` that `python -m sweeps.report <dir> --baseline
precision=fp32,compile=none,... --mfu` writes (benchmarks/recipes/gpu_precision_sweep.sh
runs it), and prints each goal beside the measured figure:

* bf16 + compile >= 2.5x fp32 eager (the best compiled bf16 row);
* bf16 eager >= 1.0x fp32 eager;
* data wait <= 2% of the step at the fastest setting, for each data source in the report
  (`data=folder_mix` rows are kept apart: the speed and quality goals use the embedded
  data's rows only);
* MFU >= 25% (every row's MFU is listed);
* the same validation quality as fp32: each row's best metric against the fp32 eager row,
  next to the spread of the fp32 rows (cudnn.benchmark and compile modes change rounding
  only, so their range stands in for the seed spread when a sweep has no repeats).

Prints a Markdown table; exits 0 whether or not the goals are met (it measures, it does
not gate). Tested on the committed H200 report (docs/measurements/gpu-h200-2026-11-26/report.csv).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

GOALS = {"bf16_compile": 2.5, "bf16_eager": 1.0, "data_wait": 0.02, "mfu": 0.25}


def _number(text: str) -> float | None:
    text = (text or "").strip().rstrip("x%")
    try:
        return float(text)
    except ValueError:
        return None


def read(path: Path) -> list[dict]:
    """The report's timed rows, with their overrides parsed (profiled rows left out)."""
    path = path / "report.csv" if path.is_dir() else path
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            run = row["run"].replace(" (baseline)", "")
            choices = dict(part.split("=", 1) for part in run.split(",") if "=" in part)
            if choices.get("profile") == "True" or _number(row.get("samples/s", "")) is None:
                continue
            metric = next((k for k in row if k.startswith("best ")), None)
            rows.append(
                {
                    "run": run,
                    "baseline": "(baseline)" in row["run"],
                    "precision": choices.get("precision", "fp32"),
                    "compile": choices.get("compile", "none"),
                    "data": choices.get("data", "synthetic"),
                    "samples_s": _number(row["samples/s"]),
                    "speedup": _number(row.get("speedup", "")),
                    "data_wait": (_number(row.get("data wait", "")) or 0.0) / 100,
                    "mfu": None if _number(row.get("MFU", "")) is None else _number(row["MFU"]) / 100,
                    "metric_name": metric[len("best ") :] if metric else None,
                    "metric": _number(row[metric]) if metric else None,
                }
            )
    if not rows:
        raise SystemExit(f"{path}: no timed rows")
    return rows


def goals(rows: list[dict]) -> list[tuple[str, str, str, bool | None]]:
    """(goal, target, measured, met) for each goal."""
    sources = sorted({r["data"] for r in rows}, key=lambda d: (d != "synthetic", d))
    waits = []
    for data in sources:
        fastest = max((r for r in rows if r["data"] == data), key=lambda r: r["samples_s"])
        label = "data wait at the fastest setting" + ("" if data == "synthetic" else f" ({data})")
        waits.append((label, "<= 2%", f"{100 * fastest['data_wait']:.1f}% ({fastest['run']})",
                      fastest["data_wait"] <= GOALS["data_wait"]))  # fmt: skip
    rows = [r for r in rows if r["data"] == "synthetic"] or rows
    base = next((r for r in rows if r["baseline"]), None) or next(
        (r for r in rows if r["precision"] == "fp32" and r["compile"] == "none"), None
    )
    if base is None:
        raise SystemExit("no fp32 eager row (precision=fp32, compile=none) to compare with")

    def speedup(r: dict) -> float:
        return r["speedup"] if r["speedup"] is not None else r["samples_s"] / base["samples_s"]

    out = []
    compiled = [r for r in rows if r["precision"] == "amp_bf16" and r["compile"] != "none"]
    eager = [r for r in rows if r["precision"] == "amp_bf16" and r["compile"] == "none"]
    for name, group, goal in (("bf16 + compile", compiled, "bf16_compile"), ("bf16 eager", eager, "bf16_eager")):
        if group:
            best = max(group, key=speedup)
            out.append((f"{name} vs fp32 eager", f">= {GOALS[goal]:.1f}x",
                        f"{speedup(best):.2f}x ({best['run']})", speedup(best) >= GOALS[goal]))  # fmt: skip
        else:
            out.append((f"{name} vs fp32 eager", f">= {GOALS[goal]:.1f}x", "no row", None))
    out += waits
    mfus = [r["mfu"] for r in rows if r["mfu"] is not None]
    if mfus:
        out.append(("MFU", ">= 25%", f"{100 * min(mfus):.1f}% to {100 * max(mfus):.1f}%", max(mfus) >= GOALS["mfu"]))
    fp32 = [r["metric"] for r in rows if r["precision"] == "fp32" and r["metric"] is not None]
    if base["metric"] is not None and fp32:
        spread = max(fp32) - min(fp32)
        worst = min((r for r in rows if r["metric"] is not None), key=lambda r: r["metric"])
        delta = worst["metric"] - base["metric"]
        name = f"quality ({base['metric_name']}) vs fp32 eager"
        if len(fp32) < 2:  # one row has no spread: nothing to judge a difference against
            out.append((name, "within the fp32 spread", f"worst {delta:+.3f}; one fp32 row, no spread", None))
        else:
            out.append((name, f"within the fp32 spread ({spread:.3f})", f"worst {delta:+.3f} ({worst['run']})",
                        abs(delta) <= spread))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.gpu_goals", description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="report.csv, or the sweep directory holding it")
    args = parser.parse_args(argv)
    rows = read(args.report)
    print("| goal | target | measured | met |\n|---|---|---|---|")
    for goal, target, measured, met in goals(rows):
        print(f"| {goal} | {target} | {measured} | {'—' if met is None else 'yes' if met else 'no'} |")
    print("\n| run | samples/s | speedup | data wait | MFU |\n|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["samples_s"]):
        mfu = "—" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        speed = "—" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"| {r['run']} | {r['samples_s']:.0f} | {speed} | {100 * r['data_wait']:.1f}% | {mfu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
