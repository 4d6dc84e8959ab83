"""The benchmark recipes (conf/experiment/) end to end through the real CLI, on miniature
copies of the VoiceBank+DEMAND and VCTK layouts, and the folder datasets' refusals."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

from tests.conftest import ROOT, THREADS, cli, summary_json
from trainer.checkpoint import load

# conv depth 3 with stride 4 needs >= 64 samples; everything else as small as it goes
SMALL = [
    "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.batch_size=2", "trainer.val_batch_size=4",
    "trainer.num_workers=0", "trainer.progress=log", "trainer.validation.slow_examples=0",
    "trainer.validation.media_examples=1", "model.hidden=4", "model.depth=3", "data.segment_seconds=0.25",
]  # fmt: skip


def tone(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def voicebank(root, files: int = 4):
    """clean/noisy train and test folders at 48 kHz, as distributed."""
    for split, n in (("trainset_28spk", files), ("testset", 2)):
        for i in range(n):
            clean = tone(0.4, 48000, i)
            noise = 0.05 * np.random.default_rng(100 + i).standard_normal(len(clean)).astype(np.float32)
            for kind, audio in (("clean", clean), ("noisy", clean + noise)):
                folder = root / f"{kind}_{split}_wav"
                folder.mkdir(parents=True, exist_ok=True)
                sf.write(folder / f"p{i:03d}_{i:03d}.wav", audio, 48000)
    test = root / "test"
    test.mkdir()
    (test / "clean").symlink_to(root / "clean_testset_wav")
    (test / "noisy").symlink_to(root / "noisy_testset_wav")


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.evaluate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": THREADS},
    )


def test_voicebank_recipe_trains_and_evaluates(tmp_path, monkeypatch):
    voicebank(tmp_path / "vbd")
    monkeypatch.setenv("VOICEBANK_DEMAND", str(tmp_path / "vbd"))
    run = tmp_path / "run"
    cli("+experiment=voicebank_demand", *SMALL, f"hydra.run.dir={run}", check=True)
    summary = summary_json(run)
    assert summary["status"] == "completed" and summary["monitor"] == "si_sdr"
    config = load(run / "checkpoints" / "best.pt")["config"]  # the recipe's choices reached the run
    assert config["data"]["_target_"].endswith("FolderPairs") and config["model"]["_target_"] == "models.ConvUNet"
    assert config["loss"]["terms"].keys() == {"l1", "mrstft"} and config["augment"]["p_polarity"] == 0.5
    proc = evaluate(str(run), str(tmp_path / "vbd" / "test"), "--out", str(tmp_path / "scores.csv"), "--write-audio")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert [r["file"] for r in rows] == ["p000_000", "p001_001"]
    for r in rows:  # the enhanced files beside the scores, at the model's rate, as long as the input
        audio, rate = sf.read(tmp_path / "scores-audio" / f"{r['file']}.wav")
        assert rate == 16000 and len(audio) == int(0.4 * 16000) and np.isfinite(audio).all()
    assert {"si_sdr_in", "si_sdr_out", "pesq_wb_out", "stoi_out"} <= set(rows[0])
    # a noisy file without a clean partner is named and left out; the CSV goes beside the run
    test = tmp_path / "vbd" / "test"
    sf.write(test / "noisy" / "p999_999.wav", np.zeros(1600), 48000)
    before = sorted(p.name for p in test.rglob("*"))
    proc = evaluate(str(run), str(test), "--fast")
    assert proc.returncode == 0, proc.stderr
    assert "1 of 3 files" in proc.stderr and "p999_999.wav" in proc.stderr and "not scored" in proc.stderr
    rows = list(csv.DictReader(open(run / "eval" / "test.csv")))
    assert [r["file"] for r in rows] == ["p000_000", "p001_001"]
    assert (run / "eval" / "test.json").is_file() and sorted(p.name for p in test.rglob("*")) == before


def test_vctk_superres_recipe_trains_and_reports_lsd(tmp_path, monkeypatch):
    for split, n in (("train", 3), ("test", 2)):
        speaker = tmp_path / "vctk" / split / f"p{n}"
        speaker.mkdir(parents=True)
        for i in range(n):
            sf.write(speaker / f"u{i}_mic1.flac", tone(0.5, 48000, i), 48000)
    monkeypatch.setenv("VCTK", str(tmp_path / "vctk"))
    run = tmp_path / "run"
    cli("+experiment=vctk_superres", *SMALL, f"hydra.run.dir={run}", check=True)
    history = json.loads((run / "history.json").read_text())
    assert {"lsd", "lsd_high", "lsd_input", "si_sdr"} <= set(history[-1])
    proc = evaluate(str(run), str(tmp_path / "vctk" / "test" / "p2"), "--out", str(tmp_path / "sr.csv"))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "sr.csv")))
    assert len(rows) == 2 and {"lsd_in", "lsd_out", "lsd_high_in", "lsd_high_out"} <= set(rows[0])
    assert float(rows[0]["lsd_high_in"]) > float(rows[0]["lsd_in"])  # the input's loss is all in the high band


def test_missing_dataset_folder_is_refused_before_a_run_dir_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICEBANK_DEMAND", str(tmp_path / "nowhere"))
    run = tmp_path / "run"
    proc = cli("+experiment=voicebank_demand", *SMALL, f"hydra.run.dir={run}")
    assert proc.returncode != 0
    assert "data.clean_dir" in proc.stderr and "nowhere" in proc.stderr
    assert not run.exists()
    proc = cli("data=folder_pairs", "model=conv", *SMALL, f"hydra.run.dir={run}")
    assert proc.returncode != 0 and "data.clean_dir: required" in proc.stderr


def test_a_truncated_file_stops_the_run_naming_it_or_is_skipped(tmp_path, monkeypatch):
    voicebank(tmp_path / "vbd", files=5)
    bad = tmp_path / "vbd" / "noisy_trainset_28spk_wav" / "p002_002.wav"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    monkeypatch.setenv("VOICEBANK_DEMAND", str(tmp_path / "vbd"))
    proc = cli("+experiment=voicebank_demand", *SMALL, f"hydra.run.dir={tmp_path / 'a'}")
    assert proc.returncode != 0
    assert str(bad) in proc.stderr and "truncated" in proc.stderr
    assert not (tmp_path / "a" / "checkpoints").exists()  # refused before training
    proc = cli(
        "+experiment=voicebank_demand", *SMALL, "data.bad_files=skip", f"hydra.run.dir={tmp_path / 'b'}", check=True
    )
    log = proc.stdout + proc.stderr
    assert str(bad) in log and "skipped 1 of 5" in log


def dns_layout(root, rate: int = 16000):
    """A miniature DNS-Challenge layout: speech, noise and room impulse responses."""
    for i in range(4):
        path = root / "clean" / "read_speech" / f"book_{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(0.5, rate, i), rate)
    for i in range(3):
        path = root / "noise" / f"noise_{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.1 * np.random.default_rng(200 + i).standard_normal(rate // 2).astype(np.float32), rate)
    for i in range(3):  # a direct path after a short delay, then an exponentially decaying tail
        n = int(0.3 * rate)
        rir = np.random.default_rng(300 + i).standard_normal(n) * np.exp(-np.arange(n) / (0.05 * rate)) * 0.1
        rir[: 40 + 10 * i] = 0
        rir[40 + 10 * i] = 1.0
        path = root / "impulse_responses" / "SLR26" / f"rir_{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, rir.astype(np.float32), rate)


def test_dns_challenge_recipe_trains_on_speech_noise_and_rirs(tmp_path, monkeypatch):
    dns_layout(tmp_path / "dns")
    monkeypatch.setenv("DNS_ROOT", str(tmp_path / "dns"))
    run = tmp_path / "run"
    small = [o for o in SMALL if not o.startswith("model.depth")]  # the LSTM has no depth
    extra = ["data.rir_prob=1.0", "data.valid_fraction=0.5", "trainer.validation.max_examples=1"]
    proc = cli("+experiment=dns_challenge", *small, *extra, f"hydra.run.dir={run}", check=True)
    assert summary_json(run)["status"] == "completed"
    config = load(run / "checkpoints" / "last.pt")["config"]
    assert config["data"]["rir_dir"] == str(tmp_path / "dns" / "impulse_responses")
    assert config["data"]["rir_target"] == "early" and config["model"]["_target_"] == "models.LSTMEnhancer"
    log = proc.stdout + proc.stderr
    assert "room impulse responses" in log and "validating on 1 of the" in log
    # a second start reads the folders from their manifests
    again = cli("+experiment=dns_challenge", *small, "data.rir_prob=1.0", f"hydra.run.dir={tmp_path / 'run2'}",
                check=True)  # fmt: skip
    assert "0 scanned" in again.stdout + again.stderr
