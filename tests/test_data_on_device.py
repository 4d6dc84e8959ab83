"""Data made on the training device (trainer.data_on_device, trainer/data/staged.py): the
loader ships ingredients, the engine mixes and augments after the copy. Whatever runs where,
the batches are the same, and so is training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import tiny
from trainer.data import staged
from trainer.data.augment import Augment
from trainer.data.folder import FolderMix
from trainer.data.loader import train_loader
from trainer.data.staged import Staged, concat, training_set, unbatch, unchanged
from trainer.data.synthetic import SyntheticSpeech
from trainer.loop.loggers import read_scalars
from trainer.loop.validation import to_device
from trainer.run import assemble
from trainer.tasks import SuperResolution

SR = 16000
EVERYTHING = dict(
    gain_db=[-6, 6],
    snr_db=[-5, 5],
    shift_seconds=0.05,
    p_polarity=0.5,
    p_bandlimit=0.5,
    bandlimit_hz=[3000, 7000],
    p_reverb=0.5,
    rt60_seconds=[0.1, 0.3],
)
KEYS = list(range(40, 52))


def synthetic(**kwargs) -> SyntheticSpeech:
    defaults = dict(segment_seconds=0.25, corpus_size=6, noise_corpus_size=5, val_size=4, seed=2, cache_dir=None)
    return SyntheticSpeech(**{**defaults, **kwargs})


def close(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def loader_batch(source, augment, keys) -> dict:
    """The default path: both stages in the loader, finished examples stacked."""
    dataset, finish = training_set(source, augment, on_device=False)
    assert finish is unchanged
    return torch.utils.data.default_collate(dataset.__getitems__(keys))


def device_batch(source, augment, keys, device="cpu") -> dict:
    """trainer.data_on_device: ingredients from the loader, finished after the copy."""
    dataset, finish = training_set(source, augment, on_device=True)
    ingredients = dataset.__getitems__(keys)
    assert isinstance(ingredients, dict) and "noisy" not in ingredients  # nothing mixed yet
    return finish(to_device(ingredients, torch.device(device)))


@pytest.fixture(params=["per_row", "batched"])
def path(request, monkeypatch):
    """Both ways of doing per-row work: the CPU's (row by row, subsets) and the
    accelerator's (whole-batch gathers and selects), forced here on the CPU."""
    if request.param == "batched":
        monkeypatch.setattr(staged, "batched_path", lambda device: True)
    return request.param


@pytest.mark.parametrize("augment", [None, Augment(SR, seed=5, **EVERYTHING)], ids=["plain", "augmented"])
def test_synthetic_batches_are_the_same_on_the_loader_and_on_the_device(augment, path, monkeypatch):
    source = synthetic()
    with monkeypatch.context() as m:
        m.setattr(staged, "batched_path", lambda device: False)
        reference = loader_batch(source, augment, KEYS)  # the default: all of it in a CPU loader
    close(device_batch(source, augment, KEYS), reference)  # this test's path on the "device"
    assert set(reference) == {"noisy", "clean"} and reference["noisy"].shape == (len(KEYS), SR // 4)
    # the examples really are mixed and augmented, not passed through
    assert not torch.allclose(reference["noisy"], reference["clean"])
    if augment is not None:
        assert not torch.allclose(reference["noisy"], loader_batch(source, None, KEYS)["noisy"])


def test_each_example_is_a_pure_function_of_its_key():
    """A batch's rows are the examples drawn alone, in any grouping and order."""
    source, augment = synthetic(), Augment(SR, seed=5, **EVERYTHING)
    whole = device_batch(source, augment, KEYS)
    parts = concat([device_batch(source, augment, KEYS[i : i + 5]) for i in range(0, len(KEYS), 5)])
    close(parts, whole)
    backwards = device_batch(source, augment, KEYS[::-1])
    close({k: v.flip(0) for k, v in backwards.items()}, whole)


def test_synthetic_mix_keeps_its_contract():
    """The mixture's SNR and level are the drawn ones (trainer/data/mixing.py), on a batch
    finished from ingredients."""
    source = synthetic(snr_db=[3.0, 3.0], level_db=[-20.0, -20.0], families=["white"])
    dataset, finish = training_set(source, None, on_device=True)
    batch = finish(dataset.__getitems__(KEYS))
    clean, noisy = batch["clean"].double(), batch["noisy"].double()
    snr = 10 * torch.log10(clean.pow(2).sum(1) / (noisy - clean).pow(2).sum(1))
    level = 20 * torch.log10(clean.pow(2).mean(1).sqrt())
    unclipped = noisy.abs().amax(1) < 0.99 - 1e-4
    torch.testing.assert_close(snr, torch.full_like(snr, 3.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(level[unclipped], torch.full_like(level[unclipped], -20.0), atol=1e-3, rtol=0)


def test_the_validation_set_is_unchanged_by_the_option():
    """Validation is always finished in the loader: the same fixed set either way."""
    a, b = tiny("trainer.data_on_device=false"), tiny("trainer.data_on_device=true")
    va, vb = (next(iter(assemble(c).feed.valid_loader)) for c in (a, b))
    assert all(torch.equal(va[k], vb[k]) for k in va)


def test_ingredients_from_loader_workers_equal_the_main_process(path):
    source, augment = synthetic(), Augment(SR, seed=5, **EVERYTHING)
    dataset, finish = training_set(source, augment, on_device=True)
    batches = {}
    for workers in (0, 2):
        loader, sampler = train_loader(dataset, True, 4, 3, 0, workers, False)
        sampler.set_position(1, 0)
        batches[workers] = [finish(b) for b in loader]
    assert len(batches[0]) == 3
    for a, b in zip(batches[0], batches[2]):
        close(a, b, atol=0)


def _write(path: Path, x: np.ndarray, rate: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), rate)


@pytest.fixture
def mix_folders(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        t = np.arange(int(0.5 * SR)) / SR
        _write(tmp_path / "speech" / f"s{i}.wav", 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t) * (1 + np.sin(7 * t)))
    for i in range(3):
        _write(tmp_path / "noise" / f"n{i}.wav", 0.1 * rng.standard_normal(int(0.4 * SR)))
    for i in range(2):
        rir = np.zeros(2000)
        rir[40 + 10 * i], rir[600:] = 1.0, 0.05 * rng.standard_normal(1400) * np.exp(-np.arange(1400) / 300)
        _write(tmp_path / "rir" / f"r{i}.wav", rir)
    return tmp_path


@pytest.mark.parametrize("augment", [None, Augment(SR, seed=1, **EVERYTHING)], ids=["plain", "augmented"])
def test_folder_mix_batches_are_the_same_on_the_loader_and_on_the_device(mix_folders, augment, path, monkeypatch):
    source = FolderMix(
        str(mix_folders / "speech"),
        str(mix_folders / "noise"),
        segment_seconds=0.25,
        valid_fraction=0.2,
        rir_dir=str(mix_folders / "rir"),
        cache_dir=None,
    )
    keys = [0, 1, 2, 3, 7, 9]
    with monkeypatch.context() as m:
        m.setattr(staged, "batched_path", lambda device: False)
        reference = loader_batch(source, augment, keys)
    close(device_batch(source, augment, keys), reference)
    assert not torch.allclose(reference["noisy"], reference["clean"])


@pytest.mark.parametrize(
    "task,metric",
    [("denoise", "si_sdr"), ("superres", "lsd")],  # superres: the degradation is made on the device either way
)
def test_a_run_with_data_on_the_device_trains_like_one_without(tiny_run, task, metric):
    """End to end through the engine (CPU as the device): the same losses step by step."""
    common = (f"task={task}", "model=conv", "augment=strong", "trainer.epochs=1")
    off_dir, off = tiny_run(*common, "trainer.data_on_device=false", name="off")
    on_dir, on = tiny_run(*common, "trainer.data_on_device=true", name="on")
    assert off["status"] == on["status"] == "completed"
    steps = [read_scalars(d / "tb" / "train")["loss/total"] for d in (off_dir, on_dir)]
    assert [s for s, _ in steps[0]] == [s for s, _ in steps[1]] == [1, 2, 3]  # every step logged
    np.testing.assert_allclose([v for _, v in steps[1]], [v for _, v in steps[0]], rtol=1e-4)
    a, b = (json.loads((d / "history.json").read_text()) for d in (off_dir, on_dir))
    assert len(a) == len(b) == 1
    for key in ("loss/total", metric):
        np.testing.assert_allclose(b[0][key], a[0][key], rtol=1e-4, err_msg=key)


def test_sources_without_stages_keep_their_examples(caplog):
    """The transducer's token source has nothing to mix: the option changes nothing and says so."""
    from tests.conftest import TINY_TRANSDUCER, compose_cfg

    with caplog.at_level("WARNING", logger="trainer"):
        parts = assemble(compose_cfg(*TINY_TRANSDUCER, "trainer.data_on_device=true"))
    assert parts.feed.finish is unchanged and "has no mixing or augmentation to move" in caplog.text
    assert not isinstance(parts.feed.train_loader.dataset, Staged)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches_within_float_tolerance():
    source, augment = synthetic(), Augment(SR, seed=5, **EVERYTHING)
    reference = loader_batch(source, augment, KEYS)
    on_gpu = device_batch(source, augment, KEYS, device="cuda")
    assert on_gpu["noisy"].is_cuda
    close({k: v.cpu() for k, v in on_gpu.items()}, reference, atol=1e-4)  # cuFFT and lfilter round differently
    rows = unbatch(on_gpu)
    assert len(rows) == len(KEYS)
    # the super-resolution degradation (trainer/tasks.py) is batched on the device too
    task = SuperResolution(input_rate=8000, sample_rate=SR)
    low_gpu, _ = task.pair(on_gpu)
    low_cpu, _ = task.pair(reference)
    torch.testing.assert_close(low_gpu.cpu(), low_cpu, rtol=0, atol=1e-4)
