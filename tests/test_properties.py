"""Property-based and fuzz tests of the audio input path: whatever a folder holds, what
reaches the model is finite float32 of the configured length, the same for a seed; a
damaged file only ever raises the project's own AudioError."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.data import audio_io
from trainer.data.audio_io import AudioError
from trainer.data.augment import Augment
from trainer.data.folder import FolderMix
from trainer.data.staged import Staged

RATES = [8000, 11025, 16000, 22050, 44100, 48000]
TARGET_RATE, SEGMENT = 16000, 0.25


@st.composite
def audio_files(draw):
    rate = draw(st.sampled_from(RATES))
    frames = draw(st.integers(min_value=rate // 100, max_value=rate // 2))  # 10 ms to 0.5 s
    channels = draw(st.integers(min_value=1, max_value=3))
    amplitude = draw(st.floats(min_value=1e-2, max_value=1.0))
    subtype = draw(st.sampled_from(["PCM_16", "PCM_24", "FLOAT"]))
    seed = draw(st.integers(min_value=0, max_value=2**16))
    return rate, frames, channels, amplitude, subtype, seed


def write(path: Path, rate, frames, channels, amplitude, subtype, seed) -> None:
    rng = np.random.default_rng(seed)
    data = amplitude * np.clip(rng.standard_normal((frames, channels)) * 0.3, -1, 1)
    sf.write(path, data.astype(np.float32), rate, subtype=subtype)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(speech=audio_files(), noise=audio_files(), key=st.integers(min_value=0, max_value=10**6))
def test_folder_mix_plus_augmentation_gives_finite_fixed_length_deterministic_examples(speech, noise, key):
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        for kind, spec in (("speech", speech), ("noise", noise)):
            (root / kind).mkdir()
            for i in range(2):  # two files: one is held out for validation
                write(root / kind / f"{kind}{i}.wav", *spec[:-1], spec[-1] + i)
        source = FolderMix(
            str(root / "speech"), str(root / "noise"), sample_rate=TARGET_RATE, segment_seconds=SEGMENT, seed=3
        )
        augment = Augment(
            TARGET_RATE,
            gain_db=[-6, 6],
            snr_db=[0, 20],
            shift_seconds=0.05,
            p_polarity=0.5,
            p_bandlimit=0.5,
            p_reverb=0.5,
            seed=3,
        )
        train = Staged(augment.around(source.train_stages()))
        first, again = train[key], train[key]
        for name_, x in first.items():
            assert x.dtype == torch.float32 and x.shape == (int(TARGET_RATE * SEGMENT),), name_
            assert torch.isfinite(x).all() and x.abs().max() <= 1.0
            assert torch.equal(x, again[name_])
        for x in source.valid()[0].values():
            assert x.shape == (int(TARGET_RATE * SEGMENT),) and torch.isfinite(x).all()


@settings(max_examples=30, deadline=None)
@given(spec=audio_files())
def test_read_resamples_and_downmixes_any_valid_file(spec):
    rate, frames = spec[0], spec[1]
    with tempfile.TemporaryDirectory() as name:
        path = Path(name) / "x.flac" if spec[4] != "FLOAT" else Path(name) / "x.wav"
        write(path, *spec)
        x = audio_io.read(path, TARGET_RATE)
    assert x.dtype == torch.float32 and x.ndim == 1 and torch.isfinite(x).all()
    assert abs(len(x) - frames * TARGET_RATE / rate) <= 1


def mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    kind = rng.choice(["flip", "truncate", "insert", "zero_header", "splice"])
    if kind == "flip":
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "insert":
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "zero_header":
        data[: rng.randint(1, 64)] = bytes(rng.randint(1, 64))
    else:
        a, b = sorted(rng.randrange(len(data)) for _ in range(2))
        data = data[:a] + data[b:]
    return bytes(data)


@pytest.mark.parametrize("suffix,subtype", [(".wav", "PCM_16"), (".wav", "FLOAT"), (".flac", "PCM_16")])
def test_mutated_files_raise_only_audio_error(tmp_path, suffix, subtype):
    """Bounded fuzzing (8 s per format): no crash, no hang, no non-finite sample; either
    a clean read or the project's AudioError naming the file."""
    original = tmp_path / f"original{suffix}"
    write(original, 16000, 4000, 2, 0.5, subtype, 0)
    seed_bytes = original.read_bytes()
    rng = random.Random(subtype + suffix)
    target = tmp_path / f"mutant{suffix}"
    deadline, tried, refused = time.monotonic() + 8.0, 0, 0
    while time.monotonic() < deadline:
        target.write_bytes(mutate(seed_bytes, rng))
        start = time.monotonic()
        try:
            info = audio_io.probe(target, silence_db=-60.0)
            x = audio_io.read(target, 16000)
            assert torch.isfinite(x).all() and info.frames > 0
        except AudioError as err:
            assert str(target) in str(err)
            refused += 1
        assert time.monotonic() - start < 5.0, "a mutated file took too long: a hang"
        tried += 1
    assert tried > 50 and refused > 0


def test_bad_audio_battery_through_the_folder_policy(tmp_path, caplog):
    """Stereo and other-rate files are used (down-mixed, resampled); a zero-frame file, an
    unresamplable rate, garbage and NaN samples are refused or skipped; nothing non-finite
    reaches a batch."""
    speech = tmp_path / "speech"
    speech.mkdir()
    write(speech / "stereo48k.wav", 48000, 24000, 2, 0.5, "PCM_16", 1)
    write(speech / "mono8k.flac", 8000, 4000, 1, 0.5, "PCM_16", 2)
    write(speech / "odd_rate.wav", 16001, 8000, 1, 0.5, "PCM_16", 3)
    sf.write(speech / "zero_frames.wav", np.zeros((0, 1), np.float32), 16000)
    (speech / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    nan = np.full((4000, 1), 0.1, np.float32)
    nan[100] = np.nan
    sf.write(speech / "nan.wav", nan, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as refused:
        FolderMix(str(speech), sample_rate=TARGET_RATE, segment_seconds=SEGMENT)
    for name, kind in (
        ("odd_rate", "no practical resampling"),
        ("zero_frames", "empty"),
        ("garbage", "unreadable"),
        ("nan", "non-finite"),
    ):
        assert f"{speech / name}" in str(refused.value) and kind in str(refused.value), name
    source = FolderMix(
        str(speech), sample_rate=TARGET_RATE, segment_seconds=SEGMENT, bad_files="skip", valid_fraction=0.5
    )
    assert "skipped 4 of 6 files" in caplog.text
    train = source.train()
    batch = train.__getitems__(list(range(8)))
    for example in [*batch, source.valid()[0]]:
        for x in example.values():
            assert x.dtype == torch.float32 and x.shape == (int(TARGET_RATE * SEGMENT),) and torch.isfinite(x).all()
