"""Build a paired speech test set from a speech synthesiser the training data never used.

    python -m trainer.data.speech_testset --out outputs/speech_testset [--sentences 40]

Sentences (Harvard lists 1-4, public domain) are spoken by `espeak-ng` (a system package:
`apt-get install espeak-ng`) in several voices and variants, resampled to 16 kHz, and
mixed at 0, 5 and 10 dB SNR with noise made here, independently of the project's own
generator: white, pink (1/f), brown (1/f^2), 50 Hz hum with harmonics, and babble of four
espeak-ng talkers using voices kept out of the targets. The layout is the
VoiceBank+DEMAND one (`clean/`, `noisy/`, same file names), plus `manifest.csv`.
Deterministic for a seed. Nothing is downloaded: espeak-ng runs locally.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SENTENCES = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.", "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.", "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.", "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.", "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.", "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.", "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.", "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.", "What joy there is in living.",
]  # fmt: skip
TARGET_VOICES = ["en-us+m3", "en-us+f2", "en+m7", "en-gb+f4", "en-us+klatt2", "en-gb-scotland+m1", "en+f5", "en-us+m5"]
BABBLE_VOICES = ["en-gb+m2", "en-us+f1", "en+m4", "en-gb-x-rp+f3", "en-029+m6", "en-us+klatt4"]
NOISES = ["white", "pink", "brown", "hum", "babble"]
SNRS = [0, 5, 10]
RATE = 16000


def espeak(text: str, voice: str, speed: int) -> np.ndarray:
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True
    ).stdout
    x, sr = sf.read(io.BytesIO(out), dtype="float32")
    return AF.resample(torch.from_numpy(x), sr, RATE).numpy().astype(np.float64)


def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "white":
        return rng.standard_normal(n)
    if kind in ("pink", "brown"):
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
        return np.fft.irfft(spec * f ** (-(1.0 if kind == "pink" else 2.0) / 2), n)
    if kind == "hum":
        t = np.arange(n) / RATE
        return sum(0.7**k * np.sin(2 * np.pi * 50 * k * t + k) for k in range(1, 12)) + 0.05 * rng.standard_normal(n)
    if kind == "babble":
        x = np.zeros(n)
        for _ in range(4):
            y = espeak(SENTENCES[rng.integers(len(SENTENCES))], BABBLE_VOICES[rng.integers(len(BABBLE_VOICES))], 170)
            y = np.tile(y, 1 + n // len(y))[:n]
            x += y / (y.std() + 1e-9)
        return x
    raise ValueError(kind)


def build(out: Path, sentences: int = len(SENTENCES), seed: int = 123) -> list[dict]:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found: install it (apt-get install espeak-ng) to build the speech test set")
    out = Path(out)
    (out / "clean").mkdir(parents=True, exist_ok=True)
    (out / "noisy").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i, text in enumerate(SENTENCES[:sentences]):
        voice = TARGET_VOICES[i % len(TARGET_VOICES)]
        clean = espeak(text, voice, int(rng.integers(140, 190)))
        for j, snr in enumerate(SNRS):
            kind = NOISES[(i + j) % len(NOISES)]
            noise = make_noise(kind, len(clean), rng)
            noisy = clean + noise * (clean.std() / noise.std()) * 10 ** (-snr / 20)
            gain = rng.uniform(0.1, 0.9) / max(np.abs(noisy).max(), 1e-9)  # levels vary, never clip
            name = f"{i:02d}_{snr:02d}dB_{kind}"
            sf.write(out / "clean" / f"{name}.wav", (clean * gain).astype(np.float32), RATE)
            sf.write(out / "noisy" / f"{name}.wav", (noisy * gain).astype(np.float32), RATE)
            rows.append({"file": name, "voice": voice, "noise": kind, "snr_db": snr, "text": text})
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.data.speech_testset", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/speech_testset"))
    parser.add_argument("--sentences", type=int, default=len(SENTENCES))
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    try:
        rows = build(args.out, args.sentences, args.seed)
    except RuntimeError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"{len(rows)} pairs in {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
