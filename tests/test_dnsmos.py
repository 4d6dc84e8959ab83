"""DNSMOS P.835: the package's own numbers, in trainer.evaluate (recordings without a clean
reference allowed) and in trainer.enhance --score."""

from __future__ import annotations

import csv
import json

import numpy as np
import soundfile as sf
from speechmos import dnsmos as reference

from tests.test_enhance import run_enhance, speechlike
from tests.test_experiments import evaluate
from trainer.inference import dnsmos

SR = 16000


def recordings(folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        noisy = speechlike(1.2, SR, i) + 0.05 * np.random.default_rng(10 + i).standard_normal(int(1.2 * SR))
        sf.write(folder / f"rec{i}.wav", noisy.astype(np.float32), SR, subtype="FLOAT")


def test_scores_are_the_packages_own(tmp_path):
    recordings(tmp_path)
    for path in sorted(tmp_path.glob("*.wav")):
        audio, _ = sf.read(path, dtype="float32")
        ours, theirs = dnsmos.score(audio, SR), reference.run(audio, SR)
        assert ours == {k: float(theirs[f"{k}_mos"]) for k in dnsmos.KEYS}
        assert all(1 <= v <= 5 for v in ours.values())
    # another rate is resampled to 16 kHz first: a 16 kHz recording and its 48 kHz version
    # (upsampled by scipy's polyphase filter, not the wrapper's resampler) score alike; read
    # as if it were 16 kHz, the 48 kHz version would be three times slower speech
    from scipy.signal import resample_poly

    audio16 = speechlike(1.0, SR)
    audio48 = resample_poly(audio16, 3, 1).astype(np.float32)
    at16, at48 = dnsmos.score(audio16, SR), dnsmos.score(audio48, 48000)
    assert all(abs(at16[k] - at48[k]) < 0.05 for k in dnsmos.KEYS), (at16, at48)


def test_evaluate_and_enhance_score_recordings_without_a_reference(checkpoint, tmp_path):
    recordings(tmp_path / "field")  # no clean/ folder: reference-free scoring only
    out = tmp_path / "scores.csv"
    proc = evaluate(str(checkpoint), str(tmp_path / "field"), "--dnsmos", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["file"] for r in rows] == ["rec0", "rec1"]
    assert {f"dnsmos_{k}_{t}" for k in dnsmos.KEYS for t in ("in", "out")} <= set(rows[0])
    audio, _ = sf.read(tmp_path / "field" / "rec0.wav", dtype="float32")
    assert float(rows[0]["dnsmos_ovrl_in"]) == dnsmos.score(audio, SR)["ovrl"]
    means = json.loads(out.with_suffix(".json").read_text())
    assert means["files"] == 2 and "dnsmos_ovrl_gain" in means
    proc = run_enhance(str(checkpoint), str(tmp_path / "field"), "-o", str(tmp_path / "enh"), "--score")
    assert proc.returncode == 0, proc.stderr
    table = list(csv.DictReader((tmp_path / "enh" / "dnsmos.csv").open()))
    assert len(table) == 2 and "OVRL" in proc.stdout
    enhanced, _ = sf.read(tmp_path / "enh" / "rec1.wav", dtype="float32")
    assert abs(float(table[1]["dnsmos_ovrl_out"]) - dnsmos.score(enhanced, SR)["ovrl"]) < 1e-3
