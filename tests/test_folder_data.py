"""Folder datasets: right shapes and rates, deterministic draws, and no bad file ever used."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from trainer.data import audio_io
from trainer.data.audio_io import AudioError
from trainer.data.folder import FolderMix, FolderPairs

SR = 16000
SEG = 0.1  # 1600 samples: a few crops fit in each 0.3 s file
T = int(SEG * SR)
CONF = Path(__file__).resolve().parents[1] / "conf" / "data"
# name -> (clean rate, noisy rate, noisy channels, clean suffix): resampling, down-mixing,
# mixed suffixes and a nested folder all go through the same pipeline
LAYOUT = {
    "f0": (16000, 16000, 1, ".wav"),
    "f1": (16000, 48000, 2, ".wav"),
    "f2": (8000, 16000, 1, ".wav"),
    "f3": (48000, 48000, 1, ".flac"),
    "spk/f4": (16000, 8000, 2, ".wav"),
    "spk/f5": (16000, 16000, 1, ".wav"),
}


def freq(name: str) -> float:
    """Each file is a tone of its own frequency: a crop's spectral peak says which file it came from."""
    return 500.0 + 250.0 * list(LAYOUT).index(name)


def tone(name: str, rate: int, seconds: float = 0.3, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.3 * (0.5 + t) * np.sin(2 * np.pi * freq(name) * t)  # rising: no two crops are alike
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def signature(x: torch.Tensor) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x.numpy()))) * SR / len(x))


def save(path: Path, data: np.ndarray, rate: int = SR, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, **kw)
    return path


@pytest.fixture
def pairs(tmp_path):
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    for name, (rc, rn, ch, suffix) in LAYOUT.items():
        save(clean / f"{name}{suffix}", tone(name, rc), rc)
        x = tone(name, rn, channels=ch)
        save(noisy / f"{name}.wav", x + 0.002 * np.random.default_rng(0).standard_normal(x.shape), rn)
    return clean, noisy


@pytest.fixture
def speech_noise(tmp_path, pairs):
    noise = tmp_path / "noise"
    for i, rate in enumerate((16000, 48000, 16000)):
        save(noise / f"n{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(int(0.2 * rate)), rate)
    return pairs[0], noise


def check_item(item: dict[str, torch.Tensor]) -> None:
    assert set(item) == {"noisy", "clean"}
    for x in item.values():
        assert x.shape == (T,) and x.dtype == torch.float32 and x.is_contiguous() and torch.isfinite(x).all()


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ good data


def test_pairs_draws_are_deterministic_per_key_and_epoch(pairs):
    src = FolderPairs(*pairs, segment_seconds=SEG, seed=3)
    train, valid = src.train(), src.valid()
    n = len(train)
    assert src.infinite is False and src.sample_rate == SR and n + len(valid) == len(LAYOUT) and len(valid) >= 1
    names = {signature(train[k]["clean"]) for k in range(n)} | {signature(valid[i]["clean"]) for i in range(len(valid))}
    assert names == {freq(name) for name in LAYOUT}  # every file used once, train and valid disjoint
    again = FolderPairs(*pairs, segment_seconds=SEG, seed=3).train()
    other = FolderPairs(*pairs, segment_seconds=SEG, seed=4).train()
    for k in range(n):
        item = train[k]
        check_item(item)
        assert same(item, again[k]) and not same(item, other[k])
        later = train[k + 7 * n]  # the same file in a later epoch, another crop
        assert signature(later["clean"]) == signature(item["clean"]) and not same(later, item)
        # one offset for both files of a pair, whatever their rates and channel counts
        assert (item["noisy"] - item["clean"]).abs().max() < 0.02
    batch = next(iter(DataLoader(train, batch_size=3, sampler=[2, 9, 4])))  # through __getitems__
    assert torch.equal(batch["clean"][1], train[9]["clean"])


def test_validation_is_fixed_and_zero_padded(tmp_path, pairs):
    short = {"v0": 0.05, "v1": 0.3}
    for name, seconds in short.items():
        save(tmp_path / "vc" / f"{name}.wav", tone("f0", SR, seconds), subtype="FLOAT")
        save(tmp_path / "vn" / f"{name}.wav", tone("f0", SR, seconds), subtype="FLOAT")
    a = FolderPairs(*pairs, tmp_path / "vc", tmp_path / "vn", segment_seconds=SEG, seed=1)
    b = FolderPairs(*pairs, tmp_path / "vc", tmp_path / "vn", segment_seconds=SEG, seed=2)
    assert len(a.train()) == len(LAYOUT) and len(a.valid()) == 2
    first = a.valid()[0]
    check_item(first)
    assert same(first, a.valid()[0]) and same(first, b.valid()[0])
    x = torch.from_numpy(tone("f0", SR, 0.05).astype(np.float32))
    assert torch.equal(first["clean"][:800], x) and not first["clean"][800:].any()
    assert torch.equal(a.valid()[1]["clean"], torch.from_numpy(tone("f0", SR)[:T].astype(np.float32)))  # from the start


def test_resampled_crops_match_the_resampled_file_and_stereo_is_averaged(tmp_path):
    for rate in (8000, 48000):
        path = save(tmp_path / f"r{rate}.wav", tone("f1", rate), rate)
        full = audio_io.read(path, SR)
        assert len(full) == round(0.3 * SR)
        info = audio_io.probe(path)
        assert info.frames_at(SR) == len(full)
        for start in (0, 5, 1234, len(full) - T):
            crop = audio_io.read_segment(info, SR, start, T)
            assert np.allclose(crop, full[start : start + T].numpy(), atol=1e-5)
    x = tone("f2", SR)
    path = save(tmp_path / "st.wav", np.stack([x, x], axis=1), subtype="FLOAT")
    assert np.allclose(audio_io.read_segment(audio_io.probe(path), SR, 0, T), x[:T], atol=1e-7)
    assert np.allclose(audio_io.read(path, SR).numpy(), x, atol=1e-7)


def test_mix_draws_snr_level_and_determinism(speech_noise):
    speech, noise = speech_noise
    ranges = dict(snr_db=[0.0, 10.0], level_db=[-30.0, -20.0], segment_seconds=SEG)
    src = FolderMix(speech, noise, seed=5, **ranges)
    train = src.train()
    n = len(train)
    twin = FolderMix(speech, noise, seed=5, **ranges).train()
    items = train.__getitems__(list(range(2 * n)))
    for k, item in enumerate(items):
        check_item(item)
        assert same(item, twin[k])
        clean, noisy = item["clean"].double(), item["noisy"].double()
        snr = 10 * torch.log10(clean.pow(2).sum() / (noisy - clean).pow(2).sum())
        assert -0.01 <= snr <= 10.01 and noisy.abs().max() <= 0.99 + 1e-6
        level = 10 * torch.log10(clean.pow(2).mean())
        assert level <= -19.99  # at most the drawn level (lower only where the peak limit bites)
    for k in range(n):  # key and key + N * epoch: the same speech file, new crop and noise
        assert signature(items[k]["clean"]) == signature(items[k + n]["clean"]) and not same(items[k], items[k + n])
    valid = src.valid()
    assert len(valid) >= 1 and same(valid[0], FolderMix(speech, noise, seed=5, **ranges).valid()[0])  # fixed
    assert same(valid[0], FolderMix(speech, noise, seed=9, **ranges).valid()[0])  # not the seed's


def test_mix_without_noise_gives_clean_as_input(speech_noise):
    src = FolderMix(speech_noise[0], None, segment_seconds=SEG)
    item = src.train()[0]
    check_item(item)
    assert torch.equal(item["noisy"], item["clean"]) and item["clean"].abs().max() > 0


@pytest.mark.parametrize("name", ["folder_pairs", "folder_mix"])
def test_yaml_instantiates(name, pairs, speech_noise):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    if name == "folder_pairs":
        cfg.clean_dir, cfg.noisy_dir = map(str, pairs)
    else:
        cfg.speech_dir, cfg.noise_dir = map(str, speech_noise)
    cfg.seed, cfg.segment_seconds = 0, SEG
    src = instantiate(cfg)
    assert type(src).__name__ == ("FolderPairs" if name == "folder_pairs" else "FolderMix")
    check_item(src.train()[0])
    check_item(src.valid()[0])


# ------------------------------------------------------------------ bad data


def _good_wav_bytes(tmp_path: Path) -> bytes:
    return save(tmp_path / "scratch" / "g.wav", tone("f0", SR)).read_bytes()


def write_bad(kind: str, path: Path, tmp_path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        save(path, np.zeros(0))
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "header only":
        path.write_bytes(_good_wav_bytes(tmp_path)[:44])
    elif kind == "truncated":
        data = _good_wav_bytes(tmp_path)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "nan":
        x = tone("f0", SR)
        x[100] = np.nan
        save(path, x, subtype="FLOAT")
    elif kind == "zeros":
        save(path, np.zeros(SR // 4))


FILE_KINDS = {
    "empty": "empty",
    "garbage": "unreadable",
    "header only": "unreadable",
    "truncated": "truncated",
    "nan": "non-finite",
    "zeros": "silent",
}


def skipped_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "trainer"]


@pytest.mark.parametrize("kind", [*FILE_KINDS, "length mismatch", "no partner"])
def test_pairs_bad_files(kind, pairs, tmp_path, caplog):
    clean, noisy = pairs
    bad = clean / "bad.wav"
    if kind == "length mismatch":
        save(bad, tone("f0", SR, 0.3))
        save(noisy / "bad.wav", tone("f0", SR, 0.25))
    elif kind == "no partner":
        save(bad, tone("f0", SR))
    else:
        write_bad(kind, bad, tmp_path)
        save(noisy / "bad.wav", tone("f0", SR))
    needle = FILE_KINDS.get(kind, kind)
    with pytest.raises(AudioError) as err:
        FolderPairs(clean, noisy, segment_seconds=SEG)
    assert str(bad) in str(err.value) and needle in str(err.value)
    with caplog.at_level(logging.WARNING, logger="trainer"):
        src = FolderPairs(clean, noisy, segment_seconds=SEG, bad_files="skip")
    lines = skipped_lines(caplog)
    assert any(str(bad) in line and needle in line for line in lines)
    assert any(f"skipped 1 of {len(LAYOUT) + 1} pairs" in line for line in lines)
    assert len(src.train()) + len(src.valid()) == len(LAYOUT)


@pytest.mark.parametrize("kind", list(FILE_KINDS))
def test_mix_bad_files(kind, speech_noise, tmp_path, caplog):
    speech, noise = speech_noise
    folder = noise if kind == "nan" else speech  # noise files are checked as strictly as speech
    bad = folder / "sub" / "bad.wav"
    write_bad(kind, bad, tmp_path)
    with pytest.raises(AudioError) as err:
        FolderMix(speech, noise, segment_seconds=SEG)
    assert str(bad) in str(err.value) and FILE_KINDS[kind] in str(err.value)
    with caplog.at_level(logging.WARNING, logger="trainer"):
        src = FolderMix(speech, noise, segment_seconds=SEG, bad_files="skip")
    total = len(audio_io.list_audio(folder, recursive=True))
    key = "noise_dir" if folder == noise else "speech_dir"
    assert any(f"skipped 1 of {total} files in data.{key}" in line for line in skipped_lines(caplog))
    for key in range(len(src.train())):
        check_item(src.train()[key])


def test_all_bad_under_skip_is_an_error(tmp_path):
    write_bad("zeros", tmp_path / "s" / "a.wav", tmp_path)
    write_bad("nan", tmp_path / "s" / "b.wav", tmp_path)
    with pytest.raises(ValueError, match="data.speech_dir.*all 2 files are bad"):
        FolderMix(tmp_path / "s", bad_files="skip", segment_seconds=SEG)


def test_missing_or_empty_folders_and_bad_values_name_the_key(tmp_path, pairs):
    clean, noisy = pairs
    with pytest.raises(FileNotFoundError, match=r"data\.clean_dir: .*nope.* does not exist"):
        FolderPairs(tmp_path / "nope", noisy)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(FileNotFoundError, match=r"data\.noisy_dir: no audio files"):
        FolderPairs(clean, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"data\.noise_dir"):
        FolderMix(clean, tmp_path / "nope")
    with pytest.raises(ValueError, match=r"data\.bad_files"):
        FolderPairs(clean, noisy, bad_files="ignore")
    with pytest.raises(ValueError, match=r"data\.snr_db"):
        FolderMix(clean, snr_db=[10, 0])
    with pytest.raises(ValueError, match=r"data\.valid_clean_dir"):
        FolderPairs(clean, noisy, valid_clean_dir=clean)


def test_reverberation_keeps_input_and_target_aligned_and_the_target_early():
    from trainer.data.mixing import reverberate

    rng = np.random.default_rng(0)
    speech = rng.standard_normal(4000).astype(np.float32)
    rir = np.zeros(3000, np.float32)
    rir[100], rir[100 + 1600] = 0.8, 0.5  # direct path after 100 samples, an echo 100 ms later
    heard, early = reverberate(speech, rir, keep=800)  # 50 ms at 16 kHz
    np.testing.assert_allclose(early, 0.8 * speech, atol=1e-5)  # the echo is past the early part
    echo = np.concatenate([np.zeros(1600, np.float32), 0.5 * speech[:-1600]])
    np.testing.assert_allclose(heard, 0.8 * speech + echo, atol=1e-5)  # aligned with the dry speech
    _, direct = reverberate(speech, rir, keep=0)
    np.testing.assert_allclose(direct, 0.8 * speech, atol=1e-5)


def test_mix_with_rirs_reverberates_a_share_and_leaves_draws_without_them_unchanged(speech_noise, tmp_path):
    speech, noise = speech_noise
    rirs = tmp_path / "rirs"
    for i in range(3):
        h = np.zeros(2400)
        h[20 * (i + 1)] = 1.0
        h[1000:] = 0.3 * np.random.default_rng(i).standard_normal(1400) * np.exp(-np.arange(1400) / 300)
        save(rirs / f"r{i}.wav", h)
    dry = FolderMix(str(speech), str(noise), segment_seconds=SEG, seed=3)
    none = FolderMix(str(speech), str(noise), segment_seconds=SEG, seed=3, rir_dir=str(rirs), rir_prob=0.0)
    wet = FolderMix(str(speech), str(noise), segment_seconds=SEG, seed=3, rir_dir=str(rirs), rir_prob=1.0)
    keys = list(range(12))
    a, b, c = (ds.train().__getitems__(keys) for ds in (dry, none, wet))
    assert all(same(x, y) for x, y in zip(a, b))  # rir_prob=0: every example exactly as without RIRs
    changed = [not torch.allclose(x["noisy"], y["noisy"]) for x, y in zip(a, c)]
    assert sum(changed) >= 10  # reverberated (a crop of silence may not change)
    for x, y in zip(a, c):  # the early target of a delta-plus-late-tail RIR is the dry speech, same gain rules
        ratio = (y["clean"] * x["clean"]).sum() / (x["clean"] * x["clean"]).sum().clamp_min(1e-12)
        assert torch.allclose(y["clean"], ratio * x["clean"], atol=1e-4)
    with pytest.raises(ValueError, match="data.rir_target"):
        FolderMix(str(speech), str(noise), segment_seconds=SEG, rir_dir=str(rirs), rir_target="late")


def test_a_file_changed_under_a_running_job_fails_its_read_by_name_or_is_skipped(speech_noise, caplog):
    speech, noise = speech_noise
    strict = FolderMix(str(speech), str(noise), segment_seconds=SEG, seed=1)
    lenient = FolderMix(str(speech), str(noise), segment_seconds=SEG, seed=1, bad_files="skip")
    victim = strict._train[0].path
    victim.write_bytes(victim.read_bytes()[:100])  # truncated after the scan
    keys = list(range(2 * len(strict._train)))
    with pytest.raises(AudioError, match=f"{victim.name}: (truncated|unreadable) \\(changed since it was scanned"):
        strict.train().__getitems__(keys)
    loader = DataLoader(strict.train(), batch_size=len(keys), num_workers=1)  # from a worker: re-raised, named
    with pytest.raises(AudioError, match=victim.name):
        next(iter(loader))
    with caplog.at_level(logging.WARNING, logger="trainer"):
        items = lenient.train().__getitems__(keys)
    assert len(items) == len(keys) and all(torch.isfinite(i["noisy"]).all() for i in items)
    assert any(victim.name in r.message and "skipped" in r.message for r in caplog.records)


def test_the_recordings_switches_reach_folder_mix_batches(speech_noise):
    """The augmentation switches work on real folders as on the embedded data: through the
    job's loader, `augment.p_speed` moves each clean tone by its factor (hand-computed from
    the tone's frequency), and `bandlimit_target=masked` hands the loss its cut-off."""
    from tests.conftest import TINY, compose_cfg
    from trainer.run import assemble

    speech, noise = speech_noise
    folders = ("data=folder_mix", f"data.speech_dir={speech}", f"data.noise_dir={noise}", "data.segment_seconds=0.1",
               "data.cache_dir=null", "trainer.batch_size=4")  # fmt: skip

    def first_batch(*overrides):
        parts = assemble(compose_cfg(*[o for o in TINY if not o.startswith("data.")], *folders, *overrides))
        parts.feed.sampler.set_position(0, 0)
        return next(iter(parts.feed.train_loader))

    plain = first_batch("augment=none")
    sped = first_batch("augment=recordings", "augment.p_eq=0", "augment.p_noiseless=0", "augment.p_clip=0",
                       "augment.p_quantize=0", "augment.gain_db=null", "augment.shift_seconds=0",
                       "augment.p_polarity=0", "augment.p_speed=1.0", "augment.speed=[1.1,1.1]")  # fmt: skip
    for before, after in zip(plain["clean"], sped["clean"]):
        n = int(len(after) / 1.1)  # the sped-up crop's own length (then a pause)
        got = float(np.argmax(np.abs(np.fft.rfft(after[:n].numpy())))) * SR / n
        assert got == pytest.approx(1.1 * signature(before), abs=SR / n + 1)
    masked = first_batch("augment=recordings", "augment.p_bandlimit=1.0", "augment.bandlimit_target=masked")
    assert ((masked["loss_cutoff_hz"] >= 3000) & (masked["loss_cutoff_hz"] <= 7000)).all()
