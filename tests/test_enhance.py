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
    torch.testing.assert_close(fade, torch.sin(0.5 * torch.pi * (torch.arange(1000) + 0.5) / 1000) ** 2)
    assert fade[0] < 1e-5 and fade[-1] > 1 - 1e-5 and bool((fade.diff() > 0).all())
    x = torch.from_numpy(speechlike(3.3, SR))
    # joins of two chunks; chunks that meet three at a time (overlap over half a chunk)
    for chunk, overlap in ((16000, 4000), (8000, 0), (10000, 3000), (10000, 6000), (9000, 8000)):
        y = enhance(lambda b: 2 * b, x, chunk, overlap, batch=3, device=torch.device("cpu"))
        assert torch.allclose(y, 2 * x, atol=1e-6), (chunk, overlap)  # no seam, no gain change at the joins


def test_chunks_start_every_step_the_last_padded_in_batches_and_a_short_signal_whole():
    """The model sees chunks of exactly `chunk` samples starting every `chunk - overlap`,
    the last zero-padded past the end, at most `batch` at a time; a signal no longer than a
    chunk is passed whole, unpadded."""
    for n, chunk, overlap, batch in (
        (20000, 6000, 1500, 2),
        (18000, 6000, 0, 4),
        (13500, 6000, 1500, 3),
        (7001, 7000, 10, 1),
    ):
        x = torch.arange(1, n + 1, dtype=torch.float32)  # a chunk's first sample is its start + 1
        seen = []

        def record(b, seen=seen):
            seen.append(b.clone())
            return b

        enhance(record, x, chunk, overlap, batch=batch, device=torch.device("cpu"))
        assert all(len(b) <= batch for b in seen) and len(seen[0]) == min(batch, sum(len(b) for b in seen))
        pieces = torch.cat(seen)
        step = chunk - overlap
        starts = list(range(0, n, step))
        starts = starts[: next(k for k, s in enumerate(starts) if s + chunk >= n) + 1]  # until one reaches the end
        assert [int(p[0]) - 1 for p in pieces] == starts, (n, chunk, overlap)
        for s, p in zip(starts, pieces):
            inside = min(chunk, n - s)
            torch.testing.assert_close(p[:inside], x[s : s + inside])
            assert not p[inside:].any()  # the padding
    seen.clear()
    y = enhance(record, x[:500], 600, 100, batch=2, device=torch.device("cpu"))
    assert [b.shape for b in seen] == [(1, 500)] and torch.equal(y, x[:500])


def test_chunks_are_joined_by_raised_cosine_crossfades_without_a_seam():
    """A model whose output depends on its whole chunk (here: a constant, the chunk's first
    input sample) makes each chunk's output differ; the join must be the raised-cosine blend
    of the two, sample by sample (a hard cut jumps, a linear fade is off the formula)."""

    def per_chunk(b):
        return torch.ones_like(b) * b[:, :1]

    for n, chunk, overlap in ((20000, 6000, 1500), (19001, 6000, 2000)):
        x = torch.arange(n, dtype=torch.float32)  # a chunk's first sample is its start
        y = enhance(per_chunk, x, chunk, overlap, batch=2, device=torch.device("cpu"))
        step = chunk - overlap
        starts = list(range(0, n - overlap, step))  # the last chunk is padded past the end
        assert len(starts) > 2 and starts[-1] + chunk > n
        i = torch.arange(overlap, dtype=torch.float32)
        w = torch.sin(0.5 * torch.pi * (i + 0.5) / overlap) ** 2  # the fade-in, from its formula
        for prev, start in zip(starts, starts[1:]):
            torch.testing.assert_close(y[start : start + overlap], (1 - w) * prev + w * start, rtol=1e-5, atol=1e-3)
            # no seam: the largest step between samples is the blend's own slope, far below the jump
            assert (y[start : start + overlap].diff().abs().max()) < step * 0.5 * torch.pi / overlap * 1.01
            # between two overlaps: one chunk alone
            alone = y[start + overlap : start + step]  # the last chunk's ends at n
            torch.testing.assert_close(alone, torch.full_like(alone, float(start)))
        torch.testing.assert_close(y[:step], torch.zeros(step))  # before any overlap: the first chunk alone
        assert len(y) == n
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


def test_stream_takes_a_gtcrn(tmp_path):
    """--stream with a GTCRN checkpoint: its hop-by-hop form (models/gtcrn.py), realigned,
    equal to the one-shot model once the recurrent state has forgotten the one-shot model's
    reflect-padded first frame (the GTCRN has no level to settle)."""
    from trainer.inference.enhance import main

    gtcrn = untrained_checkpoint(tmp_path, "model=gtcrn")
    sf.write(tmp_path / "x.wav", speechlike(2.0, SR), SR)
    x, _ = sf.read(tmp_path / "x.wav", dtype="float32")
    assert main([str(gtcrn), str(tmp_path / "x.wav"), "-o", str(tmp_path / "g"), "--stream", "--quiet",
                 "--subtype", "FLOAT"]) == 0  # fmt: skip
    streamed, rate = sf.read(tmp_path / "g" / "x.wav", dtype="float32")
    model, _ = load_model(gtcrn, torch.device("cpu"))
    with torch.no_grad():
        whole = model(torch.from_numpy(x)[None])[0].numpy()
    late = slice(SR // 2, -SR // 10)
    assert rate == SR and streamed.shape == x.shape and np.abs(whole[late]).max() > 1e-3
    np.testing.assert_allclose(streamed[late], whole[late], atol=1e-5)
