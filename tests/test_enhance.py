"""`python -m trainer.enhance`: any file or folder, any length, rate and channel count; no
seams; existing outputs kept; bad files named and counted; transducers refused."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import ROOT, THREADS, TINY_TRANSDUCER, compose_cfg
from tests.helpers import untrained_checkpoint
from trainer.inference.enhance import crossfade, enhance
from trainer.inference.loading import load_model

SR = 16000


def run_enhance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.enhance", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": THREADS}, timeout=300)  # fmt: skip


def speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(3 * t)) + 0.05 * rng.standard_normal(len(t))).astype(
        np.float32
    )


def test_crossfades_sum_to_one_so_a_linear_model_is_chunked_exactly():
    fade = crossfade(1000)
    assert torch.allclose(fade + (1 - fade), torch.ones(1000)) and fade[0] < 1e-5 and fade[-1] > 1 - 1e-5
    x = torch.from_numpy(speechlike(3.3, SR))
    for chunk, overlap in ((16000, 4000), (8000, 0), (10000, 3000)):
        y = enhance(lambda b: 2 * b, x, chunk, overlap, batch=3, device=torch.device("cpu"))
        assert torch.allclose(y, 2 * x, atol=1e-6), (chunk, overlap)  # no seam, no gain change at the joins


def test_chunks_are_joined_by_raised_cosine_crossfades_without_a_seam():
    """A model whose output depends on its whole chunk (here: a constant, the chunk's first
    input sample) makes each chunk's output differ; the join must be the raised-cosine blend
    of the two, sample by sample (a hard cut jumps, a linear fade is off the formula)."""
    n, chunk, overlap = 20000, 6000, 1500
    x = torch.arange(n, dtype=torch.float32)  # a chunk's first sample is its start

    def per_chunk(b):
        return torch.ones_like(b) * b[:, :1]

    y = enhance(per_chunk, x, chunk, overlap, batch=2, device=torch.device("cpu"))
    starts = [0, 4500, 9000, 13500, 18000]  # every 4500 samples; the last chunk is padded past the end
    for prev, start in zip(starts, starts[1:]):
        length = prev + chunk - start  # the overlap of two neighbours
        i = torch.arange(length, dtype=torch.float32)
        w = torch.sin(0.5 * torch.pi * (i + 0.5) / length) ** 2  # the fade-in, from its formula
        torch.testing.assert_close(y[start : start + length], (1 - w) * prev + w * start, rtol=1e-5, atol=1e-3)
        # no seam: the largest step between samples is the blend's own slope, far below the jump
        assert (y[start : start + length].diff().abs().max()) < (start - prev) * 0.5 * torch.pi / length * 1.01
    torch.testing.assert_close(y[:4500], torch.zeros(4500))  # before any overlap: the first chunk alone
    fade = crossfade(8)
    torch.testing.assert_close(fade + fade.flip(0), torch.ones(8))  # fade-in and fade-out sum to one


def test_a_short_file_gets_the_one_shot_output_and_a_long_one_stays_close(checkpoint):
    model, _ = load_model(checkpoint, torch.device("cpu"))
    x = torch.from_numpy(speechlike(6.0, SR))
    with torch.no_grad():
        whole = model(x[None])[0]
    assert torch.equal(enhance(model, x, 7 * SR, SR, 4, torch.device("cpu")), whole)
    chunked = enhance(model, x, 3 * SR, SR, 4, torch.device("cpu"))
    snr = 10 * torch.log10(whole.pow(2).sum() / (whole - chunked).pow(2).sum())
    assert snr > 20, f"chunked output {snr:.1f} dB from the one-shot output"  # level normalisation per chunk


def test_a_folder_is_enhanced_with_its_layout_rates_and_channels(checkpoint, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "day1").mkdir(parents=True)
    sf.write(src / "a.wav", np.stack([speechlike(1.5, 48000), speechlike(1.5, 48000, 1)], axis=1), 48000)
    sf.write(src / "day1" / "b.flac", speechlike(0.7, SR), SR)
    sf.write(src / "day1" / "c.ogg", speechlike(0.5, 22050), 22050)
    (src / "day1" / "broken.wav").write_bytes(b"RIFF1234WAVEnot really")
    proc = run_enhance(str(checkpoint), str(src), "-o", str(out), "--chunk-seconds", "0.5", "--overlap-seconds", "0.1")
    assert proc.returncode == 1, proc.stderr  # one file failed, and it is named
    assert "broken.wav" in proc.stderr and "3 enhanced" in proc.stdout
    a, rate_a = sf.read(out / "a.wav")
    assert rate_a == 48000 and a.shape == (int(1.5 * 48000), 2) and np.isfinite(a).all() and np.abs(a).max() > 0
    b, rate_b = sf.read(out / "day1" / "b.flac")
    assert rate_b == SR and b.shape == (int(0.7 * SR),)
    c, rate_c = sf.read(out / "day1" / "c.wav")  # OGG in, WAV out, at the file's rate
    assert rate_c == 22050 and len(c) == int(0.5 * 22050)
    before = (out / "a.wav").stat().st_mtime_ns
    again = run_enhance(str(checkpoint), str(src), "-o", str(out))
    assert "0 enhanced, 3 already there" in again.stdout and (out / "a.wav").stat().st_mtime_ns == before
    mixed = run_enhance(str(checkpoint), str(src / "a.wav"), "-o", str(tmp_path / "mono"), "--channels", "mix",
                        "--format", "flac")  # fmt: skip
    assert mixed.returncode == 0, mixed.stderr
    m, _ = sf.read(tmp_path / "mono" / "a.flac")
    assert m.ndim == 1 and len(m) == int(1.5 * 48000)
    assert not list(out.rglob(".tmp-*"))  # written under a temporary name, then renamed
    # the input's sample format is kept (16-bit in, 16-bit out); a lossy input gives float WAV
    assert sf.info(str(src / "a.wav")).subtype == "PCM_16" and sf.info(str(out / "a.wav")).subtype == "PCM_16"
    assert sf.info(str(out / "day1" / "b.flac")).subtype == sf.info(str(src / "day1" / "b.flac")).subtype
    assert sf.info(str(out / "day1" / "c.wav")).subtype == "FLOAT"
    assert sf.info(str(tmp_path / "mono" / "a.flac")).subtype == "PCM_16"
    asked = run_enhance(str(checkpoint), str(src / "a.wav"), "-o", str(tmp_path / "f"), "--subtype", "FLOAT")
    assert asked.returncode == 0 and sf.info(str(tmp_path / "f" / "a.wav")).subtype == "FLOAT"
    wrong = run_enhance(str(checkpoint), str(src / "a.wav"), "-o", str(tmp_path / "w"), "--subtype", "PCM_17")
    assert wrong.returncode == 101 and "--subtype PCM_17" in wrong.stderr and not (tmp_path / "w").exists()


def test_a_transducer_checkpoint_and_bad_arguments_are_refused(checkpoint, tmp_path):
    from trainer.run import run

    run_dir = tmp_path / "asr"
    run(compose_cfg(*TINY_TRANSDUCER), run_dir)
    sf.write(tmp_path / "x.wav", speechlike(0.5, SR), SR)
    proc = run_enhance(str(run_dir), str(tmp_path / "x.wav"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 101 and "transducer" in proc.stderr and "tokens, not to audio" in proc.stderr
    proc = run_enhance(str(checkpoint), str(tmp_path / "nothing"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 101 and "no such file or folder" in proc.stderr
    proc = run_enhance(str(checkpoint), str(tmp_path / "x.wav"), "-o", str(tmp_path / "o"), "--overlap-seconds", "20")
    assert proc.returncode == 101 and "--overlap-seconds" in proc.stderr


def test_stream_carries_state_hop_by_hop(checkpoint, tmp_path):
    """--stream: a causal LSTM run as the exported streaming model runs, realigned to the
    input; close to the one-shot output once its running level has settled."""
    from models.streaming import StreamingEnhancer
    from trainer.inference.enhance import enhance_streaming, main

    sf.write(tmp_path / "x.wav", speechlike(2.0, SR), SR)
    x, _ = sf.read(tmp_path / "x.wav", dtype="float32")  # as the file holds it (16-bit)
    assert main([str(checkpoint), str(tmp_path / "x.wav"), "-o", str(tmp_path / "s"), "--stream", "--quiet",
                 "--level-seconds", "inf", "--subtype", "FLOAT"]) == 0  # float out: compared to 1e-6  # fmt: skip
    streamed, rate = sf.read(tmp_path / "s" / "x.wav", dtype="float32")
    model, _ = load_model(checkpoint, torch.device("cpu"))
    step = StreamingEnhancer(model, SR, level_seconds=float("inf"))
    expected = enhance_streaming(step, torch.from_numpy(x), torch.device("cpu"))
    assert rate == SR and streamed.shape == x.shape
    np.testing.assert_allclose(streamed, expected.numpy(), atol=1e-6)
    with torch.no_grad():
        whole = model(torch.from_numpy(x)[None])[0].numpy()
    late = slice(SR // 2, -SR // 10)  # after the level has settled, before the offline model's padded end
    snr = 10 * np.log10((whole[late] ** 2).sum() / ((whole[late] - streamed[late]) ** 2).sum())
    assert snr > 20, f"streamed output {snr:.1f} dB from the one-shot output"
    conv = untrained_checkpoint(tmp_path, "model=conv")
    with pytest.raises(SystemExit) as refused:
        main([str(conv), str(tmp_path / "x.wav"), "-o", str(tmp_path / "c"), "--stream"])
    assert refused.value.code == 101 and not (tmp_path / "c").exists()
