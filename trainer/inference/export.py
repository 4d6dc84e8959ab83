"""Export a trained enhancer for use outside the trainer (docs/guide/export-and-enhance.md).

    python -m trainer.export <checkpoint.pt or run dir> -o <out dir>
                             [--formats torchscript,onnx] [--level-seconds 3] [--fixed-scale RMS] [--overwrite]

A causal (unidirectional) `LSTMEnhancer` or a `GTCRN` exports as a **streaming** model: one
hop of audio per call, its frame, overlap-add and network state passed in and handed back
(models/streaming.py, models/gtcrn.py), as `streaming.pt` (TorchScript) and `streaming.onnx`. Any other
model (a bidirectional LSTM, the conv U-Net) exports **whole-utterance**, audio (B, time)
in and out, as `model.pt` and `model.onnx`. ONNX files use opset 18 (torch.onnx's dynamo
exporter; 18 is its lowest) and a dynamic batch (and, whole-utterance, time) axis.

`export.json` beside them says what a caller needs: the sample rate, the hop and window,
the inputs and outputs with their shapes, the latency and the self-check. Every file is
loaded back after writing (`torch.jit.load`, ONNX Runtime) and run against the PyTorch
model on a test signal (streaming: chunk by chunk); one that differs by more than 1e-4 is
deleted and the exit status is 1. Exit status 2: nothing exported (a bad checkpoint, a
transducer, existing files without --overwrite, a missing package).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from models.lstm import LSTMEnhancer
from models.streaming import StreamingEnhancer, WholeUtterance, is_streamable, run, streaming_form
from trainer.checkpoint import CheckpointError
from trainer.files import write_json
from trainer.inference.loading import load_audio_model

TOLERANCE = 1e-4
OPSET = 18
FORMATS = ("torchscript", "onnx")
REFUSED = 2


def test_signal(sample_rate: int, seconds: float = 2.0, batch: int = 2) -> torch.Tensor:
    """Seeded noise bursts at two levels with a quiet start: the check's input."""
    g = torch.Generator().manual_seed(0)
    n = int(seconds * sample_rate)
    t = torch.arange(n) / sample_rate
    bursts = (torch.sin(2 * math.pi * 3 * t) > 0).float() * 0.9 + 0.1
    x = torch.randn(batch, n, generator=g) * bursts * torch.logspace(-2, -0.5, batch)[:, None]
    return x + 0.3 * torch.sin(2 * math.pi * 220 * t) * bursts


def state_shapes(step) -> dict[str, list]:
    """Each state tensor's shape, its batch axis named."""
    shapes = {name: list(s.shape) for name, s in zip(step.state_names, step.initial_state(1))}
    for name, axis in zip(step.state_names, step.batch_dims):
        shapes[name][axis] = "batch"
    return shapes


class OnnxStep:
    """An ONNX Runtime session called like the PyTorch step: (chunk, *state) -> (out, *state)."""

    def __init__(self, path: Path, names: list[str], threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = names

    def __call__(self, *inputs):
        feeds = {n: np.ascontiguousarray(t.numpy() if torch.is_tensor(t) else t) for n, t in zip(self.names, inputs)}
        return [torch.from_numpy(o) for o in self.session.run(None, feeds)]


@contextlib.contextmanager
def quiet_exporter():
    """torch.onnx's dynamo exporter narrates each step and warns about torch internals."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic, meta: dict) -> None:
    import onnx

    with quiet_exporter():
        program = torch.onnx.export(
            module, args, input_names=inputs, output_names=outputs, opset_version=OPSET,
            dynamo=True, dynamic_shapes=dynamic, verbose=False,
        )  # fmt: skip
    proto = program.model_proto
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.save(proto, str(path))


def export_streaming(model, sample_rate: int, out: Path, formats, level_seconds, fixed_scale) -> dict:
    step = streaming_form(model, sample_rate, level_seconds=level_seconds, fixed_scale=fixed_scale).eval()
    levelled = isinstance(step, StreamingEnhancer)  # the LSTM's stream; the GTCRN's has no level
    if fixed_scale is not None and not levelled:
        print(f"note: --fixed-scale sets the LSTM's input level; a {type(model).__name__} normalises no level: "
              "ignored", file=sys.stderr)  # fmt: skip
    example = (torch.zeros(2, step.hop), *step.initial_state(2))
    names = step.state_names
    inputs, outputs = ["chunk", *names], ["out", *(f"{n}_out" for n in names)]
    x = test_signal(sample_rate)
    reference = run(step, x, step.initial_state(2), step.hop)
    files, checks = {}, {}
    meta = {"kind": "streaming", "sample_rate": sample_rate, "hop": step.hop, "n_fft": step.n_fft}
    if "torchscript" in formats:
        path = out / ".tmp-streaming.pt"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(step, example).save(str(path))
        files["torchscript"] = path
        checks["torchscript"] = run(load_torchscript(path), x, step.initial_state(2), step.hop)
    if "onnx" in formats:
        path = out / ".tmp-streaming.onnx"
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic = ({0: batch}, *({axis: batch} for axis in step.batch_dims))
        export_onnx(step, example, path, inputs, outputs, dynamic, meta)
        files["onnx"], checks["onnx"] = path, run(OnnxStep(path, inputs), x, step.initial_state(2), step.hop)
    info = {
        **meta,
        "level_seconds": level_seconds if fixed_scale is None and levelled else None,
        "fixed_scale": fixed_scale if levelled else None,
        "inputs": {"chunk": ["batch", step.hop], **state_shapes(step)},
        "outputs": {"out": ["batch", step.hop], **{f"{n}_out": s for n, s in state_shapes(step).items()}},
        "initial_state": "zeros",
        "latency": step.latency(),
    }
    return keep_verified(out, "streaming", files, {k: max_error(v, reference) for k, v in checks.items()}, info)


def export_whole(model, sample_rate: int, out: Path, formats) -> dict:
    onnx_module = WholeUtterance(model).eval() if isinstance(model, LSTMEnhancer) else model
    lengths = (sample_rate, int(1.37 * sample_rate))
    signals = [test_signal(sample_rate, n / sample_rate) for n in lengths]
    with torch.no_grad():
        references = [model(x) for x in signals]
    files, errors = {}, {}
    if "torchscript" in formats:
        path = out / ".tmp-model.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:  # scripting keeps length-dependent Python arithmetic; tracing would freeze it
                scripted = torch.jit.script(model)
            except Exception:  # the LSTM's representations do not script; their traced ops follow the length
                with torch.no_grad():
                    scripted = torch.jit.trace(model, (signals[0],))
        scripted.save(str(path))
        loaded = load_torchscript(path)
        with torch.no_grad():
            errors["torchscript"] = max(max_error(loaded(x), r) for x, r in zip(signals, references))
        files["torchscript"] = path
    if "onnx" in formats:
        path = out / ".tmp-model.onnx"
        dims = {0: torch.export.Dim("batch", min=1, max=4096), 1: torch.export.Dim("time", min=2, max=2**31 - 1)}
        meta = {"kind": "whole-utterance", "sample_rate": sample_rate}
        export_onnx(onnx_module, (signals[0],), path, ["audio"], ["enhanced"], (dims,), meta)
        session = OnnxStep(path, ["audio"], threads=0)
        errors["onnx"] = max(max_error(session(x)[0], r) for x, r in zip(signals, references))
        files["onnx"] = path
    info = {
        "kind": "whole-utterance",
        "sample_rate": sample_rate,
        "inputs": {"audio": ["batch", "time"]},
        "outputs": {"enhanced": ["batch", "time"]},
    }
    return keep_verified(out, "model", files, errors, info)


def load_torchscript(path: Path):
    with warnings.catch_warnings():  # "torch.jit.load is deprecated" (torch 2.14): still what libtorch loads
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def keep_verified(out: Path, stem: str, files: dict[str, Path], errors: dict[str, float], info: dict) -> dict:
    """Keep the files that passed the check under their final names; delete the others."""
    suffix = {"torchscript": ".pt", "onnx": ".onnx"}
    info["check"] = {"tolerance": TOLERANCE, "max_abs_error": errors}
    info["files"], info["failed"] = {}, []
    for fmt, tmp in files.items():
        if errors[fmt] <= TOLERANCE:
            final = out / f"{stem}{suffix[fmt]}"
            tmp.replace(final)
            info["files"][fmt] = final.name
        else:
            tmp.unlink()
            info["failed"].append(fmt)
    write_json(out / "export.json", info)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file, or a run directory (checkpoints/best.pt)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument("--formats", default="torchscript,onnx", help="comma-separated: torchscript, onnx")
    parser.add_argument(
        "--level-seconds", type=float, default=3.0,
        help="streaming: time constant of the running input level (inf: the mean over the whole stream)",
    )  # fmt: skip
    parser.add_argument("--fixed-scale", type=float, help="streaming: divide the input by this RMS instead")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]

    def refuse(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return REFUSED

    if bad or not formats:
        return refuse(f"--formats: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(FORMATS)}")
    if not args.level_seconds > 0 or (args.fixed_scale is not None and not args.fixed_scale > 0):
        return refuse("--level-seconds and --fixed-scale must be > 0")
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as err:
            return refuse(f"ONNX export needs {err.name}: pip install -e '.[export]' (or --formats torchscript)")
    try:
        model, cfg, task = load_audio_model(args.checkpoint, torch.device("cpu"), "trainer.export")
    except (CheckpointError, FileNotFoundError) as err:
        return refuse(str(err))
    taken = [p.name for p in args.out.glob("*") if p.name in ("export.json", "streaming.pt", "streaming.onnx",
                                                               "model.pt", "model.onnx")]  # fmt: skip
    if taken and not args.overwrite:
        return refuse(f"{args.out} already holds an export ({', '.join(sorted(taken))}): --overwrite replaces it")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in taken:  # an overwrite leaves no file of the earlier export behind
        (args.out / name).unlink()
    if is_streamable(model):
        info = export_streaming(model, task.sample_rate, args.out, formats, args.level_seconds, args.fixed_scale)
    else:
        info = export_whole(model, task.sample_rate, args.out, formats)
    info_line = ", ".join(f"{fmt} {err:.1e}" for fmt, err in info["check"]["max_abs_error"].items())
    print(f"{info['kind']} export -> {args.out}: {', '.join(info['files'].values()) or 'nothing'} "
          f"(max |exported - PyTorch|: {info_line})")  # fmt: skip
    if "latency" in info:
        lat = info["latency"]
        print(f"hop {lat['hop_ms']:.1f} ms, window {lat['window_ms']:.1f} ms, algorithmic latency "
              f"{lat['algorithmic_ms']:.1f} ms ({lat['algorithmic_plus_hop_ms']:.1f} ms with a hop of "
              "compute)")  # fmt: skip
    if info["failed"]:
        print(f"error: {', '.join(info['failed'])} differed from PyTorch by more than {TOLERANCE}: deleted",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
