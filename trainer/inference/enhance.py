"""Run a trained model on your own recordings.

    python -m trainer.enhance <checkpoint.pt or run dir> <file or folder> -o <out dir>
                              [--format wav|flac] [--subtype PCM_16|PCM_24|FLOAT|...]
                              [--channels separate|mix] [--overwrite]
                              [--chunk-seconds 10] [--overlap-seconds 1] [--batch 8] [--device auto]
                              [--stream [--level-seconds 3]] [--score]

Every WAV, FLAC or OGG file (a folder is searched recursively) is written under `-o` with
the same relative path: WAV in, WAV out; FLAC in, FLAC out; OGG in, WAV out; or all in
`--format`, in the input's sample format (16-bit in, 16-bit out; a lossy input gives
float WAV or 24-bit FLAC) unless `--subtype` names one. Any sample rate: the audio is
resampled to the model's rate and, for denoising, back to the file's rate (a
super-resolution model's output stays at its own, higher rate: that is its point). Any
number of channels: each is enhanced on its own
(`--channels separate`, the default) or they are down-mixed to one (`mix`).

Any length: files longer than `--chunk-seconds` are cut into chunks that overlap by
`--overlap-seconds`, enhanced in batches of `--batch` chunks (on the GPU when there is
one), and joined with complementary raised-cosine crossfades over the overlaps, so there
is no seam. A file that fits in one chunk gets exactly the model's one-shot output. The
models normalise each input's level, so a chunked output differs slightly from a one-shot
output of the whole file (tests/test_enhance.py bounds the difference). `--stream` runs a
causal LSTM or GTCRN checkpoint hop by hop instead, its state carried from one hop to the
next (models/streaming.py, the form `python -m trainer.export` writes): the output a
real-time deployment would give, with no chunks, in constant memory (the LSTM's level a
running RMS over the past `--level-seconds`; the GTCRN has no level to track).

`--score` rates every input and output with DNSMOS P.835 (reference-free;
trainer/inference/dnsmos.py) into `<out>/dnsmos.csv` and prints the means. Existing outputs are
skipped unless `--overwrite`. A file that cannot be read is named and skipped; the exit
status is the number of files that failed (at most 100), 0 when all were written, 101
when nothing could be started (checkpoint, paths, arguments).
Transducer checkpoints are refused: they map audio to tokens, not to audio.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from models.lstm import LSTMEnhancer
from models.streaming import is_streamable, streaming_form
from models.streaming import run as run_stream
from trainer.checkpoint import CheckpointError
from trainer.data import audio_io
from trainer.inference.loading import load_audio_model
from trainer.tasks import AudioTask, SuperResolution

REFUSED = 101
SUFFIX_OUT = {".wav": ".wav", ".flac": ".flac", ".ogg": ".wav"}


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit status (2) would read as "2 files failed"
        self.print_usage(sys.stderr)
        self.exit(REFUSED, f"{self.prog}: error: {message}\n")


def crossfade(n: int) -> torch.Tensor:
    """Fade-in weights over `n` samples; with 1 - w as the fade-out, the two sum to 1."""
    return torch.sin(0.5 * math.pi * (torch.arange(n, dtype=torch.float32) + 0.5) / n) ** 2


@torch.no_grad()
def enhance(model, audio: torch.Tensor, chunk: int, overlap: int, batch: int, device: torch.device) -> torch.Tensor:
    """The model's output for a mono signal `audio` (time,) of any length."""
    n = audio.shape[-1]
    if n <= chunk:
        return model(audio[None].to(device))[0].float().cpu()
    # A chunk every `chunk - overlap` samples until one reaches the end (that one is padded
    # with zeros), so every two neighbours overlap by exactly `overlap` samples.
    starts = list(range(0, n - overlap, chunk - overlap))
    pieces = torch.stack([torch.nn.functional.pad(audio[s : s + chunk], (0, max(0, s + chunk - n))) for s in starts])
    outs = torch.cat([model(pieces[i : i + batch].to(device)).float().cpu() for i in range(0, len(pieces), batch)])
    weights = torch.ones(len(starts), chunk)
    if overlap:
        fade = crossfade(overlap)
        weights[1:, :overlap] = fade  # fade in over the overlap with the previous chunk
        weights[:-1, chunk - overlap :] *= 1 - fade  # and out over the next one's
    out = torch.zeros(starts[-1] + chunk)
    weight = torch.zeros_like(out)
    for s, piece, w in zip(starts, outs, weights):
        out[s : s + chunk] += w * piece
        weight[s : s + chunk] += w
    # Where two chunks meet the fades sum to one; where three do (an overlap over half a
    # chunk) the division makes the weights sum to one. No weight is 0: the fades never are.
    return (out / weight)[:n]


@torch.no_grad()
def enhance_streaming(step, audio: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`audio` (time,) hop by hop with carried state, realigned: the stream's output lags by
    n_fft - hop samples, so that many zeros are fed after the end and the lag cut off."""
    delay = step.n_fft - step.hop
    x = torch.nn.functional.pad(audio, (0, delay))[None].to(device)
    state = tuple(s.to(device) for s in step.initial_state(1))
    return run_stream(step, x, state, step.hop)[0, delay : delay + audio.shape[-1]].float().cpu()


def outputs_for(source: Path, files: list[Path], out_dir: Path, fmt: str | None) -> list[Path]:
    base = source if source.is_dir() else source.parent
    return [
        out_dir / f.relative_to(base).with_suffix(f".{fmt}" if fmt else SUFFIX_OUT[f.suffix.lower()]) for f in files
    ]


def process(path: Path, target: Path, model, task: AudioTask, args, device: torch.device) -> None:
    data, rate = audio_io._load(path)  # the trainer's checks: unreadable, truncated, non-finite, ...
    channels = [data.mean(axis=1)] if args.channels == "mix" else [data[:, c] for c in range(data.shape[1])]
    model_rate = task.sample_rate
    out_rate = model_rate if isinstance(task, SuperResolution) else rate
    chunk, overlap = int(args.chunk_seconds * model_rate), int(args.overlap_seconds * model_rate)
    done = []
    for channel in channels:
        x = torch.from_numpy(np.ascontiguousarray(channel))
        if rate != model_rate:
            x = AF.resample(x, *audio_io._ratio(path, rate, model_rate))
        y = (enhance_streaming(model, x, device) if args.stream
             else enhance(model, x, chunk, overlap, args.batch, device))  # fmt: skip
        if out_rate != model_rate:
            y = AF.resample(y, *audio_io._ratio(path, model_rate, out_rate))
        length = len(channel) if out_rate == rate else y.shape[-1]
        done.append(torch.nn.functional.pad(y, (0, max(0, length - y.shape[-1])))[:length])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{target.name}")
    container = target.suffix[1:].upper()
    subtype = args.subtype or sample_format(path, container)
    audio = torch.stack(done, dim=1).numpy()
    if subtype.startswith("PCM"):  # integers: an output above full scale would wrap, not clip
        audio = np.clip(audio, -1.0, 1.0)
    sf.write(str(tmp), audio, out_rate, subtype=subtype, format=container)
    tmp.replace(target)  # never a half-written output under the final name


def sample_format(source: Path, container: str) -> str:
    """The input's sample format (PCM_16 stays PCM_16) where the output container takes it;
    otherwise (a lossy input) float WAV or 24-bit FLAC."""
    subtype = sf.info(str(source)).subtype
    if sf.check_format(container, subtype):
        return subtype
    return "FLOAT" if container == "WAV" else "PCM_24"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m trainer.enhance", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file, or a run directory (checkpoints/best.pt)")
    parser.add_argument("source", type=Path, help="an audio file, or a folder (searched recursively)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--format", choices=["wav", "flac"], help="output format (default: WAV for WAV/OGG, FLAC for FLAC)"
    )
    parser.add_argument(
        "--subtype", help="sample format of the outputs: PCM_16, PCM_24, FLOAT, ... (default: the input's)"
    )
    parser.add_argument("--channels", choices=["separate", "mix"], default="separate")
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that exist")
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    parser.add_argument("--overlap-seconds", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=8, help="chunks per forward pass")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="causal LSTM and GTCRN checkpoints: hop by hop with carried state, no chunks",
    )
    parser.add_argument("--level-seconds", type=float, default=3.0, help="--stream: the running level's time constant")
    parser.add_argument(
        "--score", action="store_true", help="DNSMOS P.835 of every input and output: <out>/dnsmos.csv and means"
    )
    args = parser.parse_args(argv)
    if args.subtype is not None and args.subtype not in sf.available_subtypes():
        parser.error(f"--subtype {args.subtype}: not a sample format ({', '.join(sorted(sf.available_subtypes()))})")
    if not 0 <= args.overlap_seconds < args.chunk_seconds or args.batch < 1:
        parser.error("need 0 <= --overlap-seconds < --chunk-seconds and --batch >= 1")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)  # fmt: skip
    try:
        model, cfg, task = load_audio_model(args.checkpoint, device, "trainer.enhance")
        if args.stream:
            if not is_streamable(model):
                raise CheckpointError(
                    f"{args.checkpoint}: --stream needs a GTCRN or a causal (unidirectional) LSTM enhancer, "
                    f"not {type(model).__name__}{' (bidirectional)' if isinstance(model, LSTMEnhancer) else ''}"
                )
            if not args.level_seconds > 0:
                parser.error("--level-seconds must be > 0")
            model = streaming_form(model, task.sample_rate, level_seconds=args.level_seconds).to(device).eval()
        if args.source.is_dir():
            files = audio_io.list_audio(args.source, recursive=True)
        elif args.source.is_file():
            files = [args.source]
        else:
            raise FileNotFoundError(f"{args.source}: no such file or folder")
        if not files:
            raise FileNotFoundError(f"{args.source}: no audio files ({', '.join(audio_io.AUDIO_SUFFIXES)})")
        if args.score:
            from trainer.inference import dnsmos

            if not dnsmos.available():
                raise FileNotFoundError(dnsmos.INSTALL)
    except (CheckpointError, FileNotFoundError, audio_io.AudioError) as err:
        parser.exit(REFUSED, f"error: {err}\n")
    targets = outputs_for(args.source, files, args.out, args.format)
    todo = [(f, t) for f, t in zip(files, targets) if args.overwrite or not t.exists()]
    skipped, failed = len(files) - len(todo), []
    from tqdm import tqdm

    for path, target in tqdm(todo, unit="file", disable=args.quiet or not sys.stderr.isatty()):
        try:
            process(path, target, model, task, args, device)
        except audio_io.AudioError as err:
            failed.append(str(err))
            print(f"skipped {err}", file=sys.stderr)
    print(f"{len(todo) - len(failed)} enhanced, {skipped} already there (--overwrite rewrites them), "
          f"{len(failed)} failed -> {args.out}")  # fmt: skip
    if args.score:
        score_outputs([(f, t) for f, t in zip(files, targets) if t.exists()], args.out / "dnsmos.csv")
    return min(len(failed), 100)


def score_outputs(pairs: list[tuple[Path, Path]], csv_path: Path) -> None:
    """DNSMOS of each input and its output (down-mixed, 16 kHz): a CSV row each, then the means."""
    import csv

    from trainer.inference import dnsmos
    from trainer.metrics import nan_mean

    rows = []
    for source, target in pairs:
        row = {"file": str(source)}
        for tag, path in (("in", source), ("out", target)):
            values = dnsmos.score(audio_io.read(path, dnsmos.RATE), dnsmos.RATE)
            row |= {f"dnsmos_{k}_{tag}": round(v, 4) for k, v in values.items()}
        rows.append(row)
    if not rows:
        return
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"DNSMOS P.835 of {len(rows)} files -> {csv_path}")
    for key in dnsmos.KEYS:
        before, after = (nan_mean(r[f"dnsmos_{key}_{t}"] for r in rows) for t in ("in", "out"))
        print(f"  {key.upper():5s} {before:.3f} -> {after:.3f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
