"""Listen across runs: one page that plays the same clips through every run of a sweep.

    python -m sweeps.listen <sweep dir | run dir> ... [-o page.html] [--clips 24]
                            [--data <folder>] [--baseline <column>] [--device cpu]
    python -m sweeps.listen --where optim=sgd [--status completed] [--root outputs] -o sgd.html

Each selected run's best checkpoint (`checkpoints/best.pt`, through the project's loader)
enhances the same clips: the validation clips of the runs' own data by default (the
embedded data says each clip's noise families, SNR band and talker), or the files of
`--data` (`noisy/` and `clean/` with the same names, sub-folders kept as an attribute; or
recordings alone, then scored with DNSMOS where it is installed). Every cell is scored
as `python -m trainer.evaluate` scores (SI-SDR, PESQ-WB, STOI; LSD for super-resolution).
The outputs and scores are cached per run (`<run>/listen/<key>/`, the key naming the
clips and the checkpoint), so a second page of the same runs costs only its encoding.

The page is one self-contained HTML file (audio as Ogg Opus, spectrograms as JPEG, both
inlined; nothing fetched): rows are clips; columns the input, each run, and the clean
reference; each cell a player, the spectrogram (one colour scale per clip) and its scores
with the difference from the baseline column. `n`/`p` (or the buttons) switch the playing
clip to the next/previous column at the same position; rows sort by any score or
difference and filter by the clips' attributes; the summary on top gives per-column means
with 95% intervals and, per run, the clips it loses most on against the baseline. Beside
it, `<page>.csv` has every score and the difference from the default baseline.

Runs of different tasks or sample rates cannot share a page (a super-resolution sweep
gets its own); a run without a checkpoint is skipped with a warning, and so is a clip
that cannot be read.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import html
import io
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeps.stats import estimate

log = logging.getLogger("sweeps.listen")

PAGE = "listen.html"  # the page `python -m sweeps.report` links to in a sweep folder
CACHE = "listen"  # under each run folder
METRICS = ("si_sdr", "pesq_wb", "stoi", "lsd", "dnsmos_ovrl")  # shown when scored, in this order
NAMES = {"si_sdr": "SI-SDR", "pesq_wb": "PESQ-WB", "stoi": "STOI", "lsd": "LSD", "dnsmos_ovrl": "DNSMOS"}
LOWER_IS_BETTER = {"lsd"}
WORST = 3  # clips listed per run as the ones it loses most on


@dataclass
class Clip:
    name: str
    inputs: Any  # torch.Tensor (time,)
    target: Any | None  # the clean reference, when there is one
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Column:
    key: str  # "input", "reference" or the run's label
    kind: str  # input, run or reference
    audio: list[np.ndarray]
    scores: list[dict[str, float]]
    cache: Path  # where its encoded audio is kept (Opus encoding is the slow part of a page)


# --- which runs -----------------------------------------------------------------------


def select(paths: list[Path], root: Path, filters: argparse.Namespace) -> dict[str, Path]:
    """{label: run folder}: the runs of each sweep folder (labelled as the sweep planned
    them), each run folder named, and the runs the index filters select."""
    from trainer.experiments.index import EXPERIMENT, SWEEP, RunsIndex
    from trainer.experiments.manifest import members

    runs: dict[str, Path] = {}

    def add(label: str, folder: Path) -> None:
        name, i = label, 2
        while name in runs and runs[name] != folder:
            name, i = f"{label} ({i})", i + 1
        runs[name] = folder

    for path in paths:
        if (path / SWEEP).is_file() or (path / "multirun.yaml").is_file():
            for folder, label in members(path).items():
                add(label, Path(folder))
        elif (path / EXPERIMENT).is_file() or (path / "checkpoints").is_dir():
            add(path.name, path)
        else:
            raise ValueError(f"{path}: neither a sweep folder (sweep.json) nor a run folder (experiment.json)")
    if filters.status or filters.where or filters.metric:
        if not root.is_dir():
            raise ValueError(f"{root}: no such folder (--root)")
        index = RunsIndex(root).refresh()
        try:
            for r in index.select(filters.status, filters.where, filters.metric, filters.sort, filters.limit):
                add(r.alias, root / r.path)
        finally:
            index.close()
    if not runs:
        raise ValueError("no run selected: give sweep or run folders, or a filter (--where, --status, --metric)")
    return runs


def load_runs(runs: dict[str, Path], device) -> list[tuple[str, Path, Any, Any, Any]]:
    """(label, folder, model, config, task) of each run with a checkpoint; the runs must
    share a task and a sample rate."""
    from trainer.inference.loading import load_audio_model

    loaded = []
    for label, folder in runs.items():
        checkpoint = folder / "checkpoints" / "best.pt"
        if not checkpoint.is_file():
            log.warning("%s: no checkpoint (checkpoints/best.pt): skipped", folder)
            continue
        model, cfg, task = load_audio_model(checkpoint, device, "sweeps.listen")
        loaded.append((label, folder, model, cfg, task))
    if not loaded:
        raise ValueError("none of the selected runs has a checkpoint (checkpoints/best.pt)")
    kinds = {(type(t).__name__, t.sample_rate) for *_, t in loaded}
    if len(kinds) > 1:
        said = ", ".join(f"{label}: {type(t).__name__} at {t.sample_rate} Hz" for label, _, _, _, t in loaded)
        raise ValueError(
            f"runs of different tasks or sample rates cannot share a page ({said}); "
            "select each kind on its own page (a super-resolution sweep listens at its own rate)"
        )
    return loaded


# --- which clips ----------------------------------------------------------------------


def spaced(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over `range(total)`."""
    if count >= total:
        return list(range(total))
    return sorted({int(i * total / count) for i in range(count)})


def validation_clips(cfg, task, count: int) -> list[Clip]:
    """The runs' own validation clips (the first run's data config), with what the data
    says of each (noise families, SNR band, talker) for the embedded data."""
    import torch

    from trainer.build import build_data

    source = build_data(cfg.data)
    valid = source.valid()
    indices = spaced(len(valid), count)
    about = source.describe(1, indices) if hasattr(source, "describe") else [{} for _ in indices]
    clips = []
    for index, attrs in zip(indices, about):
        item = valid[index]
        inputs, target = task.pair({k: torch.as_tensor(v)[None] for k, v in item.items()})
        clips.append(Clip(f"valid-{index:04d}", inputs[0].float(), target[0].float(), attrs))
    return clips


def folder_clips(root: Path, task, count: int) -> list[Clip]:
    """The first `count` files of a folder: `noisy/` with its same-named `clean/` partners,
    or recordings alone; a super-resolution task band-limits full-band files as in
    training. Sub-folders become the clips' `folder` attribute; unreadable files are named
    and skipped."""
    from trainer.data import audio_io
    from trainer.tasks import SuperResolution

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--data {root}: no such folder")
    superres = isinstance(task, SuperResolution)
    base = root / ("clean" if superres else "noisy")
    base = base if base.is_dir() else root
    clean_dir = root / "clean" if (root / "clean").is_dir() and not superres else None
    files = audio_io.list_audio(base, recursive=True)
    if not files:
        raise ValueError(f"--data {root}: no audio files in {base}")
    clips = []
    for path in files:
        if len(clips) == count:
            break
        rel = path.relative_to(base)
        attrs = {"folder": str(rel.parent)} if str(rel.parent) != "." else {}
        try:
            audio = audio_io.read(path, task.sample_rate)
            if superres:
                clips.append(Clip(str(rel.with_suffix("")), task.band_limit(audio[None])[0], audio, attrs))
                continue
            partner = clean_dir / rel if clean_dir is not None else None
            target = audio_io.read(partner, task.sample_rate) if partner is not None and partner.is_file() else None
        except Exception as err:  # a file that cannot be read is named, not fatal
            log.warning("%s: cannot be read (%s): skipped", path, err)
            continue
        if target is not None:
            n = min(len(audio), len(target))
            audio, target = audio[:n], target[:n]
        clips.append(Clip(str(rel.with_suffix("")), audio, target, attrs))
    if not clips:
        raise ValueError(f"--data {root}: none of its files could be read")
    return clips


# --- scores, cached per run -------------------------------------------------------------


def cache_key(clips: list[Clip], checkpoint: Path, source: str, sample_rate: int) -> str:
    stat = checkpoint.stat()
    text = json.dumps([source, sample_rate, [c.name for c in clips], stat.st_size, stat.st_mtime_ns])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def run_outputs(folder: Path, model, task, clips: list[Clip], source: str, device) -> tuple[list, list[dict], Path]:
    """(outputs, score rows, cache folder) of one run on the clips, from its cache when it
    has them."""
    from trainer.inference import dnsmos
    from trainer.inference.evaluate import score

    key = cache_key(clips, folder / "checkpoints" / "best.pt", source, task.sample_rate)
    cache = folder / CACHE / key
    if (cache / "scores.json").is_file() and (cache / "outputs.npz").is_file():
        with np.load(cache / "outputs.npz") as saved:
            outputs = [saved[f"c{i}"].astype(np.float32) for i in range(len(clips))]
        return outputs, json.loads((cache / "scores.json").read_text()), cache
    outputs = []

    def examples():
        for clip in clips:
            yield clip.name, clip.inputs, clip.target

    class Recorder:  # the model, keeping what it outputs for the page
        def __call__(self, x):
            y = model(x)
            outputs.append(y[0].float().cpu().numpy())
            return y

    use_dnsmos = any(c.target is None for c in clips) and dnsmos.available()
    rows = score(Recorder(), task, examples(), device, slow_metrics=True, dnsmos=use_dnsmos)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(cache / "outputs.npz", **{f"c{i}": o.astype(np.float16) for i, o in enumerate(outputs)})
    (cache / "scores.json").write_text(json.dumps(rows, allow_nan=True))
    return outputs, rows, cache


def scores_of(row: dict, tag: str) -> dict[str, float]:
    out = {}
    for metric in METRICS:
        value = row.get(f"{metric}_{tag}")
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[metric] = float(value)
    return out


# --- the page -------------------------------------------------------------------------


def encoded(column: Column, sample_rate: int) -> list[str]:
    """The column's audio as data URIs, from its cache when it has them."""
    path = column.cache / f"audio-{column.kind}.json"
    if path.is_file():
        return json.loads(path.read_text())
    uris = [encode_audio(x, sample_rate) for x in column.audio]
    path.write_text(json.dumps(uris))
    return uris


def encode_audio(x: np.ndarray, sample_rate: int) -> str:
    import soundfile as sf

    x = np.asarray(x, np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    x = x / peak if peak > 1 else x  # no clipping in the codec
    buffer = io.BytesIO()
    opus = sample_rate in (8000, 12000, 16000, 24000, 48000)  # the rates Opus encodes
    sf.write(buffer, x, sample_rate, format="OGG", subtype="OPUS" if opus else "VORBIS")
    return "data:audio/ogg;base64," + base64.b64encode(buffer.getvalue()).decode()


def spectrograms(signals: list[np.ndarray], sample_rate: int, height: int = 96) -> list[str]:
    """JPEG spectrograms of one clip's signals on one colour scale (the loudest bin of any
    of them at the top, 80 dB below it at the bottom), as TensorBoard's media show them."""
    import matplotlib.pyplot as plt

    n_fft = 512 if sample_rate <= 24000 else 1024
    hop = n_fft // 2
    specs = []
    for x in signals:
        x = np.asarray(x, np.float64)
        frames = max(1, 1 + (len(x) - n_fft) // hop)
        padded = np.pad(x, (0, max(0, n_fft + (frames - 1) * hop - len(x))))
        windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:frames] * np.hanning(n_fft)
        power = np.abs(np.fft.rfft(windows, axis=1)) ** 2  # (frames, bins)
        bins = power.shape[1] - 1
        pooled = power[:, : bins - bins % height].reshape(frames, height, -1).mean(axis=2)
        specs.append(10 * np.log10(pooled.T + 1e-12))
    top = max(float(s.max()) for s in specs)
    out = []
    for s in specs:
        buffer = io.BytesIO()
        plt.imsave(buffer, s, vmin=top - 80, vmax=top, cmap="magma", origin="lower", format="jpeg",
                   pil_kwargs={"quality": 80})  # fmt: skip
        out.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return out


def summary(columns: list[Column], clips: list[Clip], metrics: list[str]) -> dict[str, Any]:
    """Per column, each metric's mean with its 95% interval; per (baseline, run), the
    paired difference's and the clips the run loses most on."""

    def est(values):
        e = estimate(values)
        return None if e is None else {"n": e.n, "mean": e.mean, "lo": e.lo, "hi": e.hi}

    means = {c.key: {m: est([s.get(m) for s in c.scores]) for m in metrics} for c in columns if c.kind != "reference"}
    against: dict[str, dict[str, Any]] = {}
    for base in columns:
        if base.kind == "reference":
            continue
        against[base.key] = {}
        for col in columns:
            if col.kind != "run" or col.key == base.key:
                continue
            diffs = {m: [diff(col.scores[i], base.scores[i], m) for i in range(len(clips))] for m in metrics}
            entry: dict[str, Any] = {m: est(diffs[m]) for m in metrics}
            if metrics:
                m = metrics[0]
                sign = -1 if m in LOWER_IS_BETTER else 1
                scored = [(sign * d, i) for i, d in enumerate(diffs[m]) if d is not None]
                entry["worst"] = [{"clip": i, "diff": sign * v} for v, i in sorted(scored)[:WORST] if v < 0]
            against[base.key][col.key] = entry
    return {"means": means, "against": against}


def diff(a: dict[str, float], b: dict[str, float], metric: str) -> float | None:
    return a[metric] - b[metric] if metric in a and metric in b else None


def write_csv(path: Path, columns: list[Column], clips: list[Clip], metrics: list[str], baseline: str) -> None:
    base = next(c for c in columns if c.key == baseline)
    attrs = sorted({k for c in clips for k in c.attrs})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip", *attrs, "column", "metric", "value", "baseline", "diff"])
        for i, clip in enumerate(clips):
            for col in columns:
                for m in metrics:
                    if m not in col.scores[i]:
                        continue
                    d = diff(col.scores[i], base.scores[i], m) if col.key != baseline else None
                    w.writerow([clip.name, *(clip.attrs.get(a, "") for a in attrs), col.key, m,
                                repr(col.scores[i][m]), baseline, "" if d is None else repr(d)])  # fmt: skip


def page(title: str, columns: list[Column], clips: list[Clip], metrics: list[str], baseline: str, rate: int) -> str:
    cells = []
    audio = [encoded(c, rate) for c in columns]
    for i, clip in enumerate(clips):
        images = spectrograms([c.audio[i] for c in columns], rate)
        cells.append([{"audio": audio[j][i], "image": img} for j, img in enumerate(images)])
    data = {
        "title": title,
        "columns": [{"key": c.key, "kind": c.kind} for c in columns],
        "clips": [{"name": c.name, "attrs": c.attrs} for c in clips],
        "scores": [[c.scores[i] for c in columns] for i in range(len(clips))],
        "cells": cells,
        "metrics": metrics,
        "names": {m: NAMES.get(m, m) for m in metrics},
        "lower": sorted(LOWER_IS_BETTER),
        "baseline": baseline,
        "summary": summary(columns, clips, metrics),
    }
    blob = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return TEMPLATE.replace("%TITLE%", html.escape(title)).replace("%DATA%", blob)


def build(args: argparse.Namespace) -> Path:
    import torch

    device = torch.device(args.device)
    runs = load_runs(select(args.runs, args.root, args), device)
    _, _, _, cfg, task = runs[0]
    if args.data is not None:
        clips, source = folder_clips(args.data, task, args.clips), f"folder:{Path(args.data).resolve()}"
    else:
        clips, source = validation_clips(cfg, task, args.clips), f"valid:{json.dumps(dict(cfg.data), default=str)}"
    log.info("%d clips through %d runs", len(clips), len(runs))
    columns: list[Column] = []
    for label, folder, model, _, _ in runs:
        outputs, rows, cache = run_outputs(folder, model, task, clips, source, device)
        if not columns:  # the input and the reference: kept in the first run's cache
            inputs = [c.inputs.numpy() for c in clips]
            columns.append(Column("input", "input", inputs, [scores_of(r, "in") for r in rows], cache))
            first = cache
        columns.append(Column(label, "run", outputs, [scores_of(r, "out") for r in rows], cache))
    if all(c.target is not None for c in clips):
        targets = [c.target.numpy() for c in clips]
        columns.append(Column("reference", "reference", targets, [{} for _ in clips], first))
    metrics = [m for m in METRICS if any(m in s for c in columns for s in c.scores)]
    baseline = args.baseline or "input"
    if baseline not in {c.key for c in columns if c.kind != "reference"}:
        names = ", ".join(r[0] for r in runs)
        raise ValueError(f"--baseline {baseline}: not a column; the columns are input and {names}")
    out = Path(args.output) if args.output else default_output(args.runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"{len(runs)} runs, {len(clips)} clips: " + ", ".join(r[0] for r in runs)
    text = page(title, columns, clips, metrics, baseline, task.sample_rate)
    out.write_text(text)
    write_csv(out.with_suffix(".csv"), columns, clips, metrics, baseline)
    return out


def default_output(paths: list[Path]) -> Path:
    if len(paths) == 1 and ((paths[0] / "sweep.json").is_file() or (paths[0] / "multirun.yaml").is_file()):
        return paths[0] / PAGE
    raise ValueError("-o <page.html>: where to write the page (the default is <sweep dir>/listen.html for one sweep)")


def main(argv: list[str]) -> int:
    from trainer.experiments.cli import add_filters, default_root

    parser = argparse.ArgumentParser(prog="python -m sweeps.listen", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="sweep folders or run folders")
    add_filters(parser)
    parser.add_argument("--root", type=Path, default=default_root(), help="the outputs folder the filters search")
    parser.add_argument("--data", type=Path, help="a folder of clips (noisy/ and clean/, or recordings alone)")
    parser.add_argument("--baseline", help="the column differences are taken against (default: input)")
    parser.add_argument("--clips", type=int, default=24, help="how many clips (default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("-o", "--output", type=Path, help="the page (default: <sweep dir>/listen.html)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = build(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")
    size = out.stat().st_size
    print(f"written: {out} ({size / 1e6:.2f} MB) and {out.with_suffix('.csv').name}")
    return 0


TEMPLATE = Path(__file__).with_name("listen_page.html").read_text()  # the page's markup, style and script

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
