"""Score a checkpoint on a folder dataset.

    python -m trainer.evaluate <checkpoint.pt or run dir> <data dir> [--out results.csv]

The model, the task and the sample rate come from the config stored in the checkpoint.
Speech enhancement: `<data dir>` holds `noisy/` and `clean/` with matching file names
(the VoiceBank+DEMAND layout); one CSV row per file with SI-SDR in/out/improvement, PESQ
wide- and narrow-band, STOI and ESTOI for the noisy input and the output.
Super-resolution: `<data dir>` (or its `clean/`) holds full-band speech; the input is
band-limited as in training; one row per file with LSD (full band and regenerated band)
and SI-SDR for the band-limited input and the output.
`--dnsmos` adds DNSMOS P.835 (SIG, BAK, OVRL; reference-free, trainer/inference/dnsmos.py) of input
and output; then `<data dir>` may hold recordings alone (`noisy/` or the folder itself).
The CSV goes beside the run (`<run dir>/eval/<data folder name>.csv`) unless `--out` names
it; the means are printed and saved beside it as JSON; `--write-audio` also saves every
output there (`<csv stem>-audio/<file>.wav`). Files in `noisy/` without a partner in
`clean/` are named in a warning, with their count, and not scored.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from trainer.checkpoint import CheckpointError
from trainer.data import audio_io
from trainer.inference.loading import load_audio_model
from trainer.metrics import nan_mean
from trainer.tasks import SLOW_METRICS, AudioTask, SuperResolution

log = logging.getLogger("trainer")


def run_folder(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to: the folder itself, or the one above `checkpoints/`."""
    checkpoint = Path(checkpoint).resolve()
    if checkpoint.is_dir():
        return checkpoint
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def paired_files(root: Path) -> list[tuple[str, Path, Path]]:
    root = Path(root)
    noisy_dir, clean_dir = root / "noisy", root / "clean"
    for d in (noisy_dir, clean_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: missing (expected {root}/noisy and {root}/clean)")
    clean = {p.stem: p for p in audio_io.list_audio(clean_dir)}
    noisy = audio_io.list_audio(noisy_dir)
    pairs = [(p.stem, p, clean[p.stem]) for p in noisy if p.stem in clean]
    if not pairs:
        raise FileNotFoundError(f"{root}: no file in noisy/ has a same-named partner in clean/")
    alone = [p.name for p in noisy if p.stem not in clean]
    if alone:  # scored files must be the ones the user meant: say which are left out
        shown = ", ".join(alone[:5]) + (f" and {len(alone) - 5} more" if len(alone) > 5 else "")
        log.warning("%d of %d files in %s have no partner in clean/ and are not scored: %s",
                    len(alone), len(noisy), noisy_dir, shown)  # fmt: skip
    return pairs


def pair_examples(pairs, sample_rate: int) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, noisy, clean) of each pair, read at `sample_rate`, cut to the shorter length."""
    for name, noisy_path, clean_path in pairs:
        noisy = audio_io.read(noisy_path, sample_rate)
        clean = audio_io.read(clean_path, sample_rate)
        n = min(len(noisy), len(clean))
        yield name, noisy[:n], clean[:n]


def band_limited_examples(files: list[Path], task: SuperResolution) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, band-limited input, full-band target) of each file, the input made as in training."""
    for path in files:
        clean = audio_io.read(path, task.sample_rate)
        yield path.stem, task.band_limit(clean[None])[0], clean


@torch.no_grad()
def score(
    model,
    task: AudioTask,
    examples,
    device: torch.device,
    slow_metrics: bool = True,
    audio_dir: Path | None = None,
    dnsmos: bool = False,
) -> list[dict]:
    """One row per example: the task's own metrics (those of validation) for the input and
    for the output, and with `slow_metrics` every metric of the tasks' slow registry. With
    `audio_dir`, each output is also written there as `<name>.wav` (float, the model's rate)."""
    rows = []
    for name, inputs, target in examples:
        output = model(inputs[None].to(device))[0].float().cpu()
        extra = reference_free(inputs, output, task.sample_rate) if dnsmos else {}
        if target is None:  # a recording without a clean reference: DNSMOS alone
            rows.append({"file": name, **extra})
            if audio_dir is not None:
                write_output(audio_dir, name, output, task.sample_rate)
            continue
        if audio_dir is not None:
            write_output(audio_dir, name, output, task.sample_rate)
        got = {
            tag: task.task_metrics(x[None], inputs[None], target[None]) for tag, x in (("in", inputs), ("out", output))
        }
        row = {"file": name}
        for key in got["out"]:
            if key not in task.input_relative:
                row[f"{key}_in"], row[f"{key}_out"] = got["in"][key].item(), got["out"][key].item()
        row.update({key: got["out"][key].item() for key in task.input_relative})
        if slow_metrics:
            for tag, signal in (("in", inputs), ("out", output)):
                for metric, fn in SLOW_METRICS.items():
                    row[f"{metric}_{tag}"] = fn(target, signal, task.sample_rate)
        rows.append(row | extra)
    return rows


def reference_free(inputs: torch.Tensor, output: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """DNSMOS P.835 of the input and of the output (trainer/inference/dnsmos.py)."""
    from trainer.inference import dnsmos

    row = {}
    for tag, signal in (("in", inputs), ("out", output)):
        row |= {f"dnsmos_{k}_{tag}": v for k, v in dnsmos.score(signal, sample_rate).items()}
    return row


def write_output(audio_dir: Path, name: str, output: torch.Tensor, sample_rate: int) -> None:
    path = Path(audio_dir) / f"{name}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    audio_io.write(path, output, sample_rate)


def noisy_examples(files: list[Path], sample_rate: int) -> Iterator[tuple[str, torch.Tensor, None]]:
    """(name, recording, None): recordings with no clean reference."""
    for path in files:
        yield path.stem, audio_io.read(path, sample_rate), None


def means(rows: list[dict]) -> dict[str, float]:
    keys = [k for k in rows[0] if k != "file"]
    out = {}
    for key in keys:
        out[key] = nan_mean(r[key] for r in rows)
    for metric in ("pesq_wb", "pesq_nb", "stoi", "estoi", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
        if f"{metric}_in" in out:
            out[f"{metric}_gain"] = out[f"{metric}_out"] - out[f"{metric}_in"]
    out["files"] = len(rows)
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "checkpoint", type=Path, help="a checkpoint file, or a run directory (uses checkpoints/best.pt)"
    )
    parser.add_argument("data", type=Path, help="folder with noisy/ and clean/")
    parser.add_argument(
        "--out", type=Path, help="per-file CSV (default: <run dir>/eval/<data folder name>.csv, beside the run)"
    )
    parser.add_argument("--fast", action="store_true", help="SI-SDR only (skip PESQ and STOI)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write-audio", action="store_true", help="save each output beside the CSV (<csv>-audio/)")
    parser.add_argument(
        "--dnsmos",
        action="store_true",
        help="add DNSMOS P.835 (SIG, BAK, OVRL) of input and output; then <data> may hold recordings only",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    try:
        model, cfg, task = load_audio_model(args.checkpoint, device, "trainer.evaluate")
        superres = isinstance(task, SuperResolution)
        if args.dnsmos:
            from trainer.inference import dnsmos

            if not dnsmos.available():
                raise FileNotFoundError(dnsmos.INSTALL)
        reference_free_only = args.dnsmos and not (args.data / "clean").is_dir() and not superres
        if reference_free_only:  # recordings only: noisy/ or the folder itself
            folder = args.data / "noisy" if (args.data / "noisy").is_dir() else args.data
            files = audio_io.list_audio(folder, recursive=True) if folder.is_dir() else []
            if not files:
                raise FileNotFoundError(f"{folder}: no audio files (.wav, .flac, .ogg)")
        elif superres:  # full-band files only; the input is made from them
            folder = args.data / "clean" if (args.data / "clean").is_dir() else args.data
            files = audio_io.list_audio(folder) if folder.is_dir() else []
            if not files:
                raise FileNotFoundError(f"{folder}: no audio files (.wav, .flac, .ogg)")
        else:
            pairs = paired_files(args.data)
    except (CheckpointError, FileNotFoundError, audio_io.AudioError) as err:
        parser.exit(2, f"error: {err}\n")
    out = args.out or run_folder(args.checkpoint) / "eval" / f"{args.data.resolve().name}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    audio_dir = out.with_name(f"{out.stem}-audio") if args.write_audio else None
    start = time.perf_counter()
    if reference_free_only:
        examples = noisy_examples(files, task.sample_rate)
        rows = score(model, task, examples, device, slow_metrics=False, audio_dir=audio_dir, dnsmos=True)
    elif superres:
        examples = band_limited_examples(files, task)
        rows = score(model, task, examples, device, slow_metrics=False, audio_dir=audio_dir, dnsmos=args.dnsmos)
    else:
        examples = pair_examples(pairs, int(cfg.data.sample_rate))
        rows = score(model, task, examples, device, not args.fast, audio_dir=audio_dir, dnsmos=args.dnsmos)
    summary = means(rows)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(rows)} files in {time.perf_counter() - start:.1f} s -> {out}")
    for key, value in summary.items():
        print(f"  {key:14s} {value:.3f}" if isinstance(value, float) else f"  {key:14s} {value}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
