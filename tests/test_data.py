"""The embedded dataset: deterministic, correctly mixed, and resumable at any batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.data import noise, voice
from trainer.data.augment import Augment
from trainer.data.loader import EpochSampler, train_loader
from trainer.data.synthetic import SyntheticSpeech
from trainer.data.tokens import SyntheticTokens

SMALL = dict(segment_seconds=0.25, corpus_size=8, noise_corpus_size=8, val_size=4)


def test_examples_are_a_pure_function_of_seed_and_index():
    a, b = SyntheticSpeech(seed=1, **SMALL), SyntheticSpeech(seed=1, **SMALL)
    for i in (0, 5, 123456789):
        x, y = a.train()[i], b.train()[i]
        assert torch.equal(x["noisy"], y["noisy"]) and torch.equal(x["clean"], y["clean"])
    c = SyntheticSpeech(seed=2, **SMALL)
    assert not torch.equal(a.train()[0]["clean"], c.train()[0]["clean"])
    # validation draws from its own stream: never a training example
    assert not torch.equal(a.valid()[0]["clean"], a.train()[0]["clean"])


def test_mixture_is_clean_plus_noise_at_an_snr_in_range():
    ds = SyntheticSpeech(snr_db=(0.0, 10.0), **SMALL)
    for i in range(20):
        ex = ds.train()[i]
        clean, noisy = ex["clean"].double(), ex["noisy"].double()
        assert clean.shape == noisy.shape == (4000,) and ex["noisy"].dtype == torch.float32
        snr = 10 * torch.log10(clean.pow(2).sum() / (noisy - clean).pow(2).sum())
        assert -0.01 <= snr.item() <= 10.01
        assert noisy.abs().max() < 1.0  # never clipped


def test_every_noise_family_is_finite_unit_level_and_has_its_character():
    power = {}
    for name, fn in noise.FAMILIES.items():
        x = noise._unit(fn(np.random.default_rng(0), 16000, 16000))
        assert np.isfinite(x).all() and np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-3)
        power[name] = np.abs(np.fft.rfft(x)) ** 2

    def top_share(p):  # energy in the strongest 1% of bins: high for tones, low for noise
        return np.sort(p)[-len(p) // 100 :].sum() / p.sum()

    assert top_share(power["hum"]) > 0.5 > 0.1 > top_share(power["white"])
    f = np.fft.rfftfreq(16000, 1 / 16000)
    low = lambda p: p[f < 500].sum() / p.sum()  # noqa: E731
    assert low(power["coloured"]) > 4 * low(power["white"])  # 1/f^a tilts energy down
    # clicks are impulsive: a few samples hold much of the energy
    clicks = noise._unit(noise.clicks(np.random.default_rng(0), 16000, 16000))
    assert np.mean(clicks**4) > 10 * 3  # kurtosis far above a Gaussian's 3


def level_variation(x: np.ndarray, frame: int = 400) -> float:
    """The coefficient of variation of 25 ms frame levels: 0 for a stationary noise."""
    levels = np.sqrt((x[: len(x) // frame * frame].reshape(-1, frame) ** 2).mean(1))
    return float(levels.std() / levels.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_opt_in_families_are_music_a_crowd_and_a_competing_talker(seed):
    """Music is tonal (most energy in a few bins, as hum) and rhythmic (its level moves); a
    crowd of 8-20 talkers at their distances murmurs (its level varies about half as much
    as one or two nearby talkers'); none is in the default list."""
    x = {n: noise._unit(noise.FAMILIES[n](np.random.default_rng(seed), 32000, 16000)) for n in noise.FAMILIES}
    power = {n: np.abs(np.fft.rfft(v)) ** 2 for n, v in x.items()}
    share = {n: np.sort(p)[-len(p) // 100 :].sum() / p.sum() for n, p in power.items()}
    assert share["music"] > 0.7 > 0.1 > share["white"]
    assert level_variation(x["music"]) > 0.3 > 0.05 > level_variation(x["white"])
    assert level_variation(x["crowd"]) < 0.7 * level_variation(x["talker"])
    assert {"music", "crowd", "talker"}.isdisjoint(noise.DEFAULT) and set(noise.DEFAULT) < set(noise.FAMILIES)
    clip, names = noise.make_noise(np.random.default_rng(seed), 16000, 16000, ["music", "crowd"], 0.0, 0.0)
    assert set(names) <= {"music", "crowd"} and np.sqrt(np.mean(clip**2)) == pytest.approx(1.0, rel=1e-6)


def test_unknown_noise_family_is_rejected_by_name():
    with pytest.raises(ValueError, match="fog"):
        SyntheticSpeech(families=["white", "fog"])


def test_sampler_resumes_mid_epoch_and_differs_between_epochs():
    s = EpochSampler(dataset_len=10, per_epoch=12, seed=3, infinite=False)
    s.set_position(1, 0)
    full = list(s)
    s.set_position(1, 5)
    assert list(s) == full[5:]
    s.set_position(2, 0)
    assert list(s) != full
    # draw keys: example = key % 10; a key never repeats (12 draws per epoch: 2 passes of 10)
    assert {k // 10 for k in full} == {2, 3} and {k // 10 for k in s} == {4, 5}
    assert len(set(full)) == 12 and sorted(k % 10 for k in full[:10]) == list(range(10))
    inf = EpochSampler(dataset_len=2**62, per_epoch=6, seed=0, infinite=True)
    inf.set_position(2, 4)
    assert list(inf) == [16, 17]


def test_batches_do_not_depend_on_the_number_of_workers():
    ds = SyntheticSpeech(**SMALL)
    batches = []
    for workers in (0, 2):
        loader, sampler = train_loader(ds.train(), True, 3, 4, 0, workers, False)
        sampler.set_position(1, 3)
        batches.append([b["noisy"] for b in loader])
    assert len(batches[0]) == 3
    assert all(torch.equal(a, b) for a, b in zip(*batches))


def test_voice_renders_at_other_sample_rates():
    for sr in (8000, 22050, 48000):
        y = voice.render(np.random.default_rng(0), sr // 2, sr)
        assert y.shape == (sr // 2,) and np.isfinite(y).all() and y.std() > 0


@pytest.mark.parametrize(
    "build,key",
    [
        (lambda: SyntheticSpeech(snr_db=[15, -5]), "data.snr_db"),
        (lambda: SyntheticTokens(gap_ms=[50, 10]), "data.gap_ms"),
        (lambda: Augment(16000, gain_db=[3.0, float("nan")]), "augment.gain_db"),
    ],
)
def test_every_source_refuses_a_reversed_or_non_finite_range_naming_its_key(build, key):
    from trainer.data.checks import span

    assert span("k", [1, 2]) == (1.0, 2.0) and span("k", (3, 3)) == (3.0, 3.0)
    with pytest.raises(ValueError, match=rf"^{key} must be \[low, high\] with low <= high, got"):
        build()


def test_the_keyed_adapter_draws_any_key_and_fixes_and_remembers_a_validation_set():
    from trainer.data.keyed import Keyed

    calls = []

    def fetch(keys):
        calls.append(list(keys))
        return [{"x": torch.tensor([float(k)])} for k in keys]

    train = Keyed.draws(fetch, size=4)
    assert len(train) == 4 and [e["x"].item() for e in train.__getitems__([9, 2])] == [9.0, 2.0]  # epoch 2, key 9
    assert calls == [[9, 2]]  # one batched fetch
    valid = Keyed.fixed_set(fetch, size=3, memo=True)
    first = valid.__getitems__([0, 2])
    assert valid.__getitems__([2, 0])[0] is first[1]  # remembered, not rendered again
    assert calls[1:] == [[0], [2]]
    with pytest.raises(IndexError):
        valid[3]
