"""Training augmentation: each transform does what it claims, keyed draws are reproducible,
and every config option instantiates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from trainer.data.augment import DRR_DB, PEAK, Augment, peaking_coefficients, room_impulse_response
from trainer.data.staged import Staged, Stages

SR = 16000
T = 4000
CONF = Path(__file__).resolve().parents[1] / "conf" / "augment"
EVERYTHING = dict(gain_db=[-6, 6], snr_db=[-5, 5], shift_seconds=0.05, p_polarity=0.5, p_bandlimit=0.5, p_reverb=0.5)


def pair(seed: int = 0, level: float = 0.1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    clean = level * torch.randn(T, generator=gen)
    return {"clean": clean, "noisy": clean + 0.5 * level * torch.randn(T, generator=gen)}


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    clean, noisy = clean.double(), noisy.double()
    return 10 * math.log10(clean.pow(2).sum() / (noisy - clean).pow(2).sum())


def test_everything_off_is_the_identity_and_inactive():
    aug = Augment(SR)
    assert not aug.active
    ex = pair()
    out = aug(ex, 7)
    assert out is not ex and torch.equal(out["clean"], ex["clean"]) and torch.equal(out["noisy"], ex["noisy"])
    for on in [
        dict(gain_db=[0, 1]),
        dict(snr_db=[0, 1]),
        dict(shift_seconds=0.01),
        dict(p_polarity=0.1),
        dict(p_bandlimit=0.1),
        dict(p_reverb=0.1),
    ]:
        assert Augment(SR, **on).active, on


def test_draws_depend_on_seed_and_key_only():
    aug = Augment(SR, seed=3, **EVERYTHING)
    ex = pair()
    a5, a3 = aug(ex, 5), aug(ex, 3)
    b3, b5 = Augment(SR, seed=3, **EVERYTHING)(ex, 3), aug(ex, 5)  # other instance, other order
    for a, b in ((a5, b5), (a3, b3)):
        assert torch.equal(a["clean"], b["clean"]) and torch.equal(a["noisy"], b["noisy"])
    assert not torch.equal(a5["noisy"], a3["noisy"])
    assert not torch.equal(Augment(SR, seed=4, **EVERYTHING)(ex, 5)["noisy"], a5["noisy"])


def test_gain_scales_both_signals_by_one_factor_in_range():
    ex, factors = pair(), set()
    for key in range(8):
        out = Augment(SR, gain_db=[-6, 6])(ex, key)
        ratio = out["clean"] / ex["clean"]
        factor = ratio[0].item()
        torch.testing.assert_close(ratio, torch.full_like(ratio, factor))
        torch.testing.assert_close(out["noisy"], ex["noisy"] * factor)
        assert 10 ** (-6 / 20) - 1e-6 <= factor <= 10 ** (6 / 20) + 1e-6
        factors.add(round(factor, 6))
    assert len(factors) == 8


def test_level_changes_are_scaled_down_never_clipped():
    ex = pair(level=0.4)  # peaks well over 1 after +20 dB
    out = Augment(SR, gain_db=[20, 20])(ex, 0)
    peak = max(out["clean"].abs().max(), out["noisy"].abs().max()).item()
    assert peak == pytest.approx(PEAK, abs=1e-6)
    factor = (out["clean"][0] / ex["clean"][0]).item()
    torch.testing.assert_close(out["clean"], ex["clean"] * factor)
    torch.testing.assert_close(out["noisy"], ex["noisy"] * factor)


def test_polarity_flips_sign_exactly():
    ex = pair()
    out = Augment(SR, p_polarity=1.0)(ex, 0)
    assert torch.equal(out["clean"], -ex["clean"]) and torch.equal(out["noisy"], -ex["noisy"])


def test_shift_is_the_same_circular_roll_of_both_within_bounds():
    ex, limit, shifts = pair(), int(0.1 * SR), set()
    for key in range(6):
        out = Augment(SR, shift_seconds=0.1)(ex, key)
        matches = [s for s in range(-limit, limit + 1) if torch.equal(out["clean"], torch.roll(ex["clean"], s))]
        assert len(matches) == 1
        assert torch.equal(out["noisy"], torch.roll(ex["noisy"], matches[0]))
        shifts.add(matches[0])
    assert len(shifts) > 1


def test_snr_remix_hits_the_drawn_snr_and_keeps_clean():
    ex = pair()
    out = Augment(SR, snr_db=[3.0, 3.0])(ex, 0)
    assert torch.equal(out["clean"], ex["clean"])
    assert snr_db(out["clean"], out["noisy"]) == pytest.approx(3.0, abs=0.01)
    drawn = [snr_db(ex["clean"], Augment(SR, snr_db=[-5, 5])(ex, key)["noisy"]) for key in range(6)]
    assert all(-5.01 <= s <= 5.01 for s in drawn) and max(drawn) - min(drawn) > 1.0


def test_bandlimit_removes_energy_above_the_cutoff():
    t = torch.arange(T) / SR
    aug = Augment(SR, p_bandlimit=1.0, bandlimit_hz=[3000, 4000])
    for freq, lo_db, hi_db in ((7500, -math.inf, -20.0), (300, -1.0, 1.0)):
        sine = 0.5 * torch.sin(2 * math.pi * freq * t)
        out = aug({"clean": sine, "noisy": sine.clone()}, 0)
        tail = slice(T // 2, None)  # past the filters' start-up transient
        gain = 20 * math.log10(out["clean"][tail].pow(2).mean().sqrt() / sine[tail].pow(2).mean().sqrt())
        assert lo_db < gain < hi_db, (freq, gain)
        torch.testing.assert_close(out["noisy"], out["clean"])
    # a range above Nyquist is clamped, not an error
    out = Augment(SR, p_bandlimit=1.0, bandlimit_hz=[9000, 20000])(pair(), 0)
    assert torch.isfinite(out["noisy"]).all()


@pytest.mark.parametrize("rt60", [0.2, 0.5, 0.8])
def test_rir_energy_decays_60_db_at_rt60(rt60):
    for drr in DRR_DB:
        rir = room_impulse_response(rt60, SR, np.random.default_rng(0), drr).double()
        assert rir.pow(2).sum().item() == pytest.approx(1.0, abs=1e-5)
        assert rir.abs().argmax().item() == 0  # the direct path leads
        # Schroeder backward integration: energy still to come, relative to the total
        edc = 10 * torch.log10(torch.flip(torch.cumsum(torch.flip(rir**2, [0]), 0), [0]))
        crossing = (edc > -60).sum().item() / SR
        assert abs(crossing - rt60) < 0.2 * rt60, (rt60, drr, crossing)


def test_reverb_wet_target_is_reverberant_dry_target_stays_dry():
    ex = pair()
    noise = ex["noisy"] - ex["clean"]
    wet = Augment(SR, p_reverb=1.0, reverb_target="wet")(ex, 0)
    assert not torch.allclose(wet["clean"], ex["clean"], atol=1e-3)
    torch.testing.assert_close(wet["noisy"] - wet["clean"], noise, atol=1e-6, rtol=0)  # the same noise
    dry = Augment(SR, p_reverb=1.0, reverb_target="dry")(ex, 0)
    assert torch.equal(dry["clean"], ex["clean"])
    torch.testing.assert_close(dry["noisy"], wet["noisy"])  # same room for the same key


def test_outputs_are_float32_finite_same_length_and_inputs_untouched():
    aug = Augment(SR, **EVERYTHING, bandlimit_hz=[3000, 7000], reverb_target="dry")
    for key in range(10):
        ex = pair(key)
        before = {k: v.clone() for k, v in ex.items()}
        out = aug(ex, key)
        assert out.keys() == ex.keys()
        for k, v in out.items():
            assert v.dtype == torch.float32 and v.shape == (T,) and torch.isfinite(v).all()
            assert v.abs().max() <= PEAK + 1e-6
            assert torch.equal(ex[k], before[k])
    clean_only = aug({"clean": pair()["clean"]}, 0)  # datasets without a mixture
    assert clean_only.keys() == {"clean"} and clean_only["clean"].shape == (T,)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(gain_db=[6, -6]), "augment.gain_db"),
        (dict(snr_db=[1, 2, 3]), "augment.snr_db"),
        (dict(shift_seconds=-0.1), "augment.shift_seconds"),
        (dict(p_polarity=1.5), "augment.p_polarity"),
        (dict(p_bandlimit=-0.1), "augment.p_bandlimit"),
        (dict(bandlimit_hz=[0, 4000]), "augment.bandlimit_hz"),
        (dict(p_reverb=2.0), "augment.p_reverb"),
        (dict(rt60_seconds=[0.8, 0.2]), "augment.rt60_seconds"),
        (dict(reverb_target="damp"), "augment.reverb_target"),
        (dict(p_eq=1.1), "augment.p_eq"),
        (dict(p_noiseless=-1), "augment.p_noiseless"),
        (dict(clip_db=[-6, 3]), "augment.clip_db"),
        (dict(quantize_bits=[0, 8]), "augment.quantize_bits"),
    ],
)
def test_bad_values_are_refused_naming_the_key(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Augment(SR, **kwargs)


@pytest.mark.parametrize("option", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_every_config_option_instantiates(option):
    cfg = OmegaConf.create({"data": {"sample_rate": SR}, "trainer": {"seed": 3}})
    cfg.augment = OmegaConf.load(CONF / f"{option}.yaml")
    aug = instantiate(cfg.augment)
    assert isinstance(aug, Augment) and aug.seed == 3 and aug.active == (option != "none")
    out = aug(pair(), 1)
    assert out["noisy"].shape == (T,) and torch.isfinite(out["noisy"]).all()


class _Batched(torch.utils.data.Dataset):
    """Maps draw keys to a few examples; counts batched fetches."""

    def __init__(self):
        self.examples, self.batched = [pair(i) for i in range(3)], 0

    def __len__(self) -> int:
        return 100

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        return self.examples[key % 3]

    def __getitems__(self, keys: list[int]) -> list[dict[str, torch.Tensor]]:
        self.batched += 1
        return [self[k] for k in keys]


class _PerItem(torch.utils.data.Dataset):
    def __init__(self, ds: _Batched):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        return self.ds[key]


def test_augmented_batched_fetch_equals_per_item_fetch():
    ds, augment = _Batched(), Augment(SR, seed=1, **EVERYTHING)
    wrapped = Staged(augment.around(Stages.of(ds)))
    keys = [4, 7, 1, 42]
    batch = wrapped.__getitems__(keys)
    assert ds.batched == 1 and len(wrapped) == 100
    for key, item in zip(keys, batch):
        single, alone = wrapped[key], augment(ds[key], key)
        for k in ("clean", "noisy"):  # rows of a batch are what each example alone gives
            torch.testing.assert_close(item[k], single[k], rtol=0, atol=1e-6)
            torch.testing.assert_close(item[k], alone[k], rtol=0, atol=1e-6)
    # a dataset without a batched path is fetched item by item
    plain = Staged(augment.around(Stages.of(_PerItem(ds))))
    assert torch.equal(plain.__getitems__([2])[0]["noisy"], wrapped[2]["noisy"])


def test_augment_group_reaches_training_batches_only():
    from tests.conftest import tiny
    from trainer.run import assemble

    def first_batches(*overrides):
        parts = assemble(tiny(*overrides))
        parts.feed.sampler.set_position(1, 0)
        train = next(iter(parts.feed.train_loader))
        return train, next(iter(parts.feed.valid_loader))

    plain, plain_val = first_batches("augment=none")
    augmented, augmented_val = first_batches("augment=strong")
    again, _ = first_batches("augment=strong")
    assert not torch.equal(plain["noisy"], augmented["noisy"])
    assert torch.equal(augmented["noisy"], again["noisy"]) and torch.equal(augmented["clean"], again["clean"])
    assert torch.equal(plain_val["noisy"], augmented_val["noisy"])  # validation is never augmented
    assert augmented["noisy"].abs().max() <= 0.99 + 1e-6


def test_a_peaking_biquad_has_its_gain_at_its_frequency_and_none_far_from_it():
    freq, gain, q = torch.tensor([1000.0, 3000.0]), torch.tensor([9.0, -12.0]), torch.tensor([1.0, 2.0])
    a, b = peaking_coefficients(freq, gain, q, SR)
    for row in range(2):
        for f, want_db in ((freq[row].item(), gain[row].item()), (20.0, 0.0), (7900.0, 0.0)):
            z = np.exp(-1j * 2 * np.pi * f / SR * np.arange(3))  # H(e^jw) = B(z) / A(z), by hand
            got = 20 * np.log10(abs(np.dot(b[row].numpy(), z) / np.dot(a[row].numpy(), z)))
            assert got == pytest.approx(want_db, abs=0.3 if want_db == 0 else 1e-3), (row, f)


def test_eq_shapes_speech_and_noise_each_by_its_own_filters_and_the_target_is_the_shaped_speech():
    from trainer.data.augment import _equalize

    aug = Augment(SR, p_eq=1.0)
    example = pair(4)
    plan = aug.plan([11])
    out = aug.apply({k: v[None] for k, v in example.items()}, plan)
    bands = plan["augment.eq_bands"]
    speech = _equalize(example["clean"][None], bands[:, 0], SR)
    noise = _equalize((example["noisy"] - example["clean"])[None], bands[:, 1], SR)
    torch.testing.assert_close(out["clean"], speech)
    torch.testing.assert_close(out["noisy"], speech + noise)
    assert not torch.allclose(bands[:, 0], bands[:, 1])  # two different colourings
    gains = bands[..., 1].flatten()
    assert bool(((gains >= -15) & (gains <= 15)).all()) and not torch.allclose(out["clean"][0], example["clean"])


def test_noiseless_examples_have_the_clean_speech_as_input():
    aug = Augment(SR, p_noiseless=0.5)
    flagged = [k for k in range(40) if aug.plan([k])["augment.noiseless"][0]]
    assert 8 < len(flagged) < 32
    out = aug(pair(1), flagged[0])
    torch.testing.assert_close(out["noisy"], out["clean"])
    kept = next(k for k in range(40) if k not in flagged)
    torch.testing.assert_close(aug(pair(1), kept)["noisy"], pair(1)["noisy"])


def test_clipping_and_quantisation_damage_the_input_only():
    example = pair(2)
    clip = Augment(SR, p_clip=1.0, clip_db=[-6.0, -6.0])
    out = clip(example, 5)
    limit = example["noisy"].abs().max() * 10 ** (-6 / 20)
    assert out["noisy"].abs().max().item() == pytest.approx(limit.item(), rel=1e-6)
    torch.testing.assert_close(out["noisy"], example["noisy"].clamp(-limit, limit))
    torch.testing.assert_close(out["clean"], example["clean"])
    quantize = Augment(SR, p_quantize=1.0, quantize_bits=[8, 8])
    out = quantize(example, 5)
    torch.testing.assert_close(out["noisy"], torch.round(example["noisy"] * 128) / 128)
    assert len(torch.unique(out["noisy"])) < len(torch.unique(example["noisy"]))
    torch.testing.assert_close(out["clean"], example["clean"])


def test_the_new_switches_leave_the_other_draws_as_they_were():
    base = Augment(SR, **EVERYTHING, seed=5)
    more = Augment(SR, **EVERYTHING, p_eq=0.5, p_noiseless=0.2, p_clip=0.3, p_quantize=0.3, p_speed=0.5, seed=5)
    a, b = base.plan(list(range(8))), more.plan(list(range(8)))
    for key, value in a.items():
        torch.testing.assert_close(b[key], value)


def tone(freq: float, seconds: float = 0.5, level: float = 0.1) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR  # float64 phase: a pure tone
    return (level * torch.sin(2 * math.pi * freq * t)).float()


def peak_hz(x: torch.Tensor) -> float:
    return float(torch.fft.rfft(x.double()).abs().argmax()) * SR / x.shape[-1]


def test_speed_resamples_speech_and_noise_each_by_its_own_factor_keeping_the_length():
    """A 1 kHz 'voice' over a 2.5 kHz 'noise': after the stage each tone sits at its own
    drawn factor times its frequency (hand-computed from the plan); the speech sped up
    ends in a pause, the noise sped up is filled with its own start (no gap)."""
    aug = Augment(SR, p_speed=1.0, speed=[0.9, 1.1])
    key = next(k for k in range(50) if (lambda r: r[0] > 100 and r[1] > 100 and r[0] != r[1])(
        aug.plan([k])["augment.speed_rates"][0].tolist()))  # fmt: skip
    plan = aug.plan([key])
    speech_rate, noise_rate = (plan["augment.speed_rates"][0] / 100).tolist()
    clean, noise = tone(1000.0), tone(2500.0, level=0.05)
    out = aug.apply({"clean": clean[None], "noisy": (clean + noise)[None]}, plan)
    got_noise = out["noisy"][0] - out["clean"][0]
    assert out["clean"].shape == (1, clean.shape[-1])
    n_speech = int(clean.shape[-1] / speech_rate)  # the sped-up speech's own length; then silence
    assert peak_hz(out["clean"][0, :n_speech]) == pytest.approx(1000.0 * speech_rate, abs=4.0)
    assert peak_hz(got_noise) == pytest.approx(2500.0 * noise_rate, abs=4.0)
    assert out["clean"][0, n_speech + 20 :].abs().max() < 1e-6
    assert got_noise[-200:].abs().max() > 0.03
    off = Augment(SR, p_speed=1.0, speed=[1.0, 1.0])
    torch.testing.assert_close(off(pair(3), 0)["noisy"], pair(3)["noisy"])
    with pytest.raises(ValueError, match="augment.speed"):
        Augment(SR, p_speed=0.5, speed=[0.2, 1.0])


def test_a_masked_band_limit_filters_the_input_alone_and_the_loss_looks_below_the_cut_off():
    """`bandlimit_target: masked`: the noisy input through the low-pass, the clean target
    untouched, the batch carrying each row's cut-off (Nyquist where the row was not limited);
    the task's loss view of a 1 kHz + 6 kHz signal is the 1 kHz tone alone below a 3.5 kHz
    cut-off, and the signal itself at Nyquist."""
    from trainer.tasks import Denoise

    aug = Augment(SR, p_bandlimit=0.5, bandlimit_hz=[3500, 3500], bandlimit_target="masked")
    keys = list(range(12))
    plan = aug.plan(keys)
    on = plan["augment.bandlimit"]
    assert 0 < int(on.sum()) < len(keys)
    examples = [pair(k) for k in keys]
    batch = {name: torch.stack([e[name] for e in examples]) for name in ("clean", "noisy")}
    out = aug.apply(batch, plan)
    torch.testing.assert_close(out["clean"], batch["clean"])
    assert not torch.allclose(out["noisy"][on], batch["noisy"][on])
    torch.testing.assert_close(out["noisy"][~on], batch["noisy"][~on])
    assert out["loss_cutoff_hz"].tolist() == [3500.0 if o else SR / 2 for o in on.tolist()]

    low, high = tone(1000.0), tone(6000.0)
    signal = (low + high)[None].repeat(2, 1)
    task = Denoise(sample_rate=SR)
    view, target = task.loss_view(signal, signal * 2, {"loss_cutoff_hz": torch.tensor([3500.0, SR / 2])})
    torch.testing.assert_close(view[0], low, atol=1e-5, rtol=0)
    torch.testing.assert_close(view[1], low + high, atol=1e-5, rtol=0)
    torch.testing.assert_close(target, view * 2)
    assert task.loss_view(signal, signal, {})[0] is signal  # no cut-off: the signals as they are
    filtered = Augment(SR, p_bandlimit=1.0, bandlimit_hz=[3500, 3500])(pair(0), 0)
    assert "loss_cutoff_hz" not in filtered and not torch.allclose(filtered["clean"], pair(0)["clean"])


def test_the_engine_trains_a_masked_band_limit_on_the_band_below_the_cut_off():
    """Through the loader and `train_step`: the training batch carries `loss_cutoff_hz`,
    and the loss receives output and target with nothing above each row's cut-off."""
    from dataclasses import replace

    from tests.conftest import tiny
    from trainer.loop.engine import train_step
    from trainer.run import assemble

    parts = assemble(tiny("augment=recordings", "augment.p_bandlimit=1.0", "augment.bandlimit_hz=[3000,3000]",
                          "augment.bandlimit_target=masked"))  # fmt: skip
    parts.feed.sampler.set_position(0, 0)
    batch = next(iter(parts.feed.train_loader))
    seen = []

    class Recording(torch.nn.Module):
        def forward(self, output, target):
            seen.append((output.detach(), target.detach()))
            return (output - target).pow(2).mean(), {}

    parts = replace(parts, optim=replace(parts.optim, loss=Recording()))
    train_step(parts, [batch], grad_clip=None)
    output, target = seen[0]
    freqs = torch.fft.rfftfreq(output.shape[-1], 1 / SR)
    for x in (output, target):
        spectrum = torch.fft.rfft(x.double()).abs().pow(2)
        assert spectrum[:, freqs > 3000].sum() < 1e-9 * spectrum.sum()
    assert torch.fft.rfft(batch["clean"].double()).abs().pow(2)[:, freqs > 3000].sum() > 0  # the target had them
