"""python -m trainer.export: the streaming form of the causal LSTM equals the offline model,
and the exported TorchScript and ONNX files (the LSTM's and the GTCRN's) equal the PyTorch
model fed chunk by chunk."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from models.conv import ConvUNet
from models.lstm import LSTMEnhancer
from models.streaming import STATE_NAMES, StreamingEnhancer, WholeUtterance, run, streaming_form
from trainer.inference import export
from trainer.inference.loading import load_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

VARIANTS = [
    {},
    {"domain": "complex"},
    {"mask": "gain"},
    {"residual": True},
    {"domain": "waveform"},
    {"n_fft": 256, "hop": 128, "layers": 1},
]


def model_of(**kw) -> LSTMEnhancer:
    torch.manual_seed(0)
    model = LSTMEnhancer(**{"n_fft": 512, "hop": 256, "hidden": 32, "layers": 2, **kw}).eval()
    if kw.get("domain") == "waveform":  # its head starts at zero (the identity): give it something to do
        torch.nn.init.normal_(model.head.weight, std=0.02)
    return model


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_stream_reproduces_the_offline_model(kw):
    """Same level, hop by hop: the offline output n_fft - hop samples later. STFT models
    reflect-pad their first frame, so the signal starts with n_fft samples of silence, where
    the reflection is silence too; the waveform model's framing is causal already."""
    model = model_of(**kw)
    n_fft, hop = kw.get("n_fft", 512), kw.get("hop", 256)
    signal = export.test_signal(16000, 1.0)
    x = signal if kw.get("domain") == "waveform" else torch.nn.functional.pad(signal, (n_fft, 0))
    with torch.no_grad():
        offline = model(x)
    rms = x.pow(2).mean(-1).sqrt()
    streamed = torch.cat(
        [
            run(step, x[b : b + 1], step.initial_state(1), hop)
            for b, step in enumerate(StreamingEnhancer(model, 16000, fixed_scale=float(s)) for s in rms)
        ]
    )
    delay, usable = n_fft - hop, x.shape[-1] - n_fft  # the offline model's reflect-padded end differs too
    torch.testing.assert_close(streamed[:, delay : delay + usable], offline[:, :usable], atol=2e-6, rtol=0)


def test_running_level_is_the_mean_power_so_far():
    model = model_of()
    step = StreamingEnhancer(model, 16000, level_seconds=math.inf)
    x = export.test_signal(16000, 0.5, batch=1)
    state = step.initial_state(1)
    for chunk in x.split(step.hop, dim=-1)[:-1]:
        _, *state = step(chunk, *state)
    seen = x[:, : (x.shape[-1] // step.hop) * step.hop]
    level = state[-1]
    assert float(level[0, 1]) == pytest.approx(seen.shape[-1] / step.hop)
    assert float(level[0, 0] / level[0, 1]) == pytest.approx(float(seen.pow(2).mean()), rel=1e-5)
    # a finite time constant forgets: the weight sum tends to 1 / (1 - decay)
    short = StreamingEnhancer(model, 16000, level_seconds=0.05)
    assert short.decay == pytest.approx(math.exp(-256 / 800))


def test_whole_utterance_form_equals_the_model():
    for kw in ({"bidirectional": True}, {"bidirectional": True, "domain": "waveform"}):
        model = model_of(**kw)
        for n in (300, 8000, 12345):
            x = export.test_signal(16000, n / 16000)
            with torch.no_grad():
                torch.testing.assert_close(WholeUtterance(model)(x), model(x), atol=2e-6, rtol=0)


def test_bidirectional_has_no_streaming_form():
    with pytest.raises(ValueError, match="bidirectional"):
        StreamingEnhancer(model_of(bidirectional=True), 16000)


def test_export_cli_streaming(checkpoint, tmp_path, capsys):
    """The trained TINY LSTM: both files load, run one hop per call and match PyTorch fed
    chunk by chunk within 1e-4; export.json names what a caller needs."""
    out = tmp_path / "export"
    assert export.main([str(checkpoint), "-o", str(out)]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["kind"] == "streaming" and info["files"] == {"torchscript": "streaming.pt", "onnx": "streaming.onnx"}
    assert max(info["check"]["max_abs_error"].values()) <= 1e-4
    model, cfg = load_model(checkpoint, torch.device("cpu"))
    step = StreamingEnhancer(model, 16000)
    hop, n_fft = step.hop, step.n_fft
    assert (info["hop"], info["n_fft"], info["sample_rate"]) == (hop, n_fft, 16000)
    assert info["latency"]["algorithmic_ms"] == pytest.approx(1000 * n_fft / 16000)
    assert "algorithmic latency" in capsys.readouterr().out

    x = torch.randn(3, 64 * hop, generator=torch.Generator().manual_seed(1)) * 0.2  # batch 3: the batch axis is free
    reference = run(step, x, step.initial_state(3), hop)
    scripted = torch.jit.load(str(out / "streaming.pt"))
    torch.testing.assert_close(run(scripted, x, step.initial_state(3), hop), reference, atol=1e-4, rtol=0)

    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "streaming.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["chunk", *STATE_NAMES]
    meta = session.get_modelmeta().custom_metadata_map
    assert (meta["kind"], int(meta["hop"]), int(meta["sample_rate"])) == ("streaming", hop, 16000)
    import onnx

    assert onnx.load(str(out / "streaming.onnx")).opset_import[0].version >= 17
    state = [s.numpy() for s in step.initial_state(3)]
    outs = []
    for chunk in x.numpy().reshape(3, -1, hop).transpose(1, 0, 2):  # one hop per call, as an application would
        out_hop, *state = session.run(None, dict(zip(["chunk", *STATE_NAMES], [chunk, *state])))
        outs.append(out_hop)
    np.testing.assert_allclose(np.concatenate(outs, axis=-1), reference.numpy(), atol=1e-4, rtol=0)


def test_export_cli_streams_a_gtcrn(tmp_path, capsys):
    """The GTCRN exports in its streaming form (models/gtcrn.py): its five state tensors
    named in export.json and in the ONNX graph, batch axis free, one hop per call in ONNX
    Runtime equal to the PyTorch stream."""
    from tests.helpers import untrained_checkpoint

    checkpoint = untrained_checkpoint(tmp_path, "model=gtcrn")
    out = tmp_path / "export"
    assert export.main([str(checkpoint), "-o", str(out), "--fixed-scale", "0.1"]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["kind"] == "streaming" and info["files"] == {"torchscript": "streaming.pt", "onnx": "streaming.onnx"}
    assert list(info["inputs"]) == ["chunk", "frame", "overlap", "conv", "attention", "grnn"]
    assert info["inputs"]["conv"] == ["batch", 16, 32, 33] and info["level_seconds"] is info["fixed_scale"] is None
    said = capsys.readouterr()
    assert "algorithmic latency 32.0 ms" in said.out and "--fixed-scale" in said.err and "ignored" in said.err

    model, _ = load_model(checkpoint, torch.device("cpu"))
    step = streaming_form(model, 16000)
    x = torch.randn(3, 40 * step.hop, generator=torch.Generator().manual_seed(4)) * 0.2
    reference = run(step, x, step.initial_state(3), step.hop)
    scripted = export.load_torchscript(out / "streaming.pt")
    torch.testing.assert_close(run(scripted, x, step.initial_state(3), step.hop), reference, atol=1e-4, rtol=0)
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "streaming.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    state, outs = [s.numpy() for s in step.initial_state(3)], []
    for chunk in x.numpy().reshape(3, -1, step.hop).transpose(1, 0, 2):
        out_hop, *state = session.run(None, dict(zip(names, [chunk, *state])))
        outs.append(out_hop)
    np.testing.assert_allclose(np.concatenate(outs, axis=-1), reference.numpy(), atol=1e-4, rtol=0)


def test_export_cli_whole_utterance_and_refusals(tiny_run, tmp_path):
    run_dir, _ = tiny_run("model=conv", "model.hidden=4", "model.depth=2", name="conv")
    out = tmp_path / "conv-export"
    assert export.main([str(run_dir), "-o", str(out)]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["kind"] == "whole-utterance" and set(info["files"]) == {"torchscript", "onnx"}
    model, _ = load_model(run_dir, torch.device("cpu"))
    assert isinstance(model, ConvUNet)
    x = torch.randn(2, 7777, generator=torch.Generator().manual_seed(2)) * 0.3  # a length the check did not use
    with torch.no_grad():
        reference = model(x)
        torch.testing.assert_close(torch.jit.load(str(out / "model.pt"))(x), reference, atol=1e-4, rtol=0)
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"audio": x.numpy()})[0], reference.numpy(), atol=1e-4, rtol=0)

    # an export is not overwritten by accident, nor with a bad format
    before = (out / "model.onnx").stat().st_mtime_ns
    assert export.main([str(run_dir), "-o", str(out)]) == export.REFUSED
    assert export.main([str(run_dir), "-o", str(tmp_path / "x"), "--formats", "tflite"]) == export.REFUSED
    assert (out / "model.onnx").stat().st_mtime_ns == before and not (tmp_path / "x").exists()
    assert export.main([str(tmp_path / "missing.pt"), "-o", str(tmp_path / "y")]) == export.REFUSED


def test_export_refuses_a_transducer(tmp_path, capsys):
    from tests.conftest import TINY_TRANSDUCER, compose_cfg
    from trainer.run import run as train

    run_dir = tmp_path / "rnnt"
    train(compose_cfg(*TINY_TRANSDUCER), run_dir)
    assert export.main([str(run_dir), "-o", str(tmp_path / "t")]) == export.REFUSED
    assert "transducer" in capsys.readouterr().err
