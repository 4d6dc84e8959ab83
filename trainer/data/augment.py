"""On-the-fly training augmentation for (clean, noisy) pairs.

A model trained on one corpus meets other levels, SNRs, rooms, channels and microphone
polarities at test time; re-drawing them per example multiplies what a finite corpus
teaches. Everything a draw does is a pure function of `(seed, key)`, where `key` is the
sampler's draw key, so augmented batches are as reproducible and resumable as the data
under them, with any number of workers and in any call order.

Each augmentation has its own random stream, so switching one on does not change what
the others draw for the same key (an ablation changes one thing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from trainer.data import staged
from trainer.data.checks import span
from trainer.data.staged import Stages, unbatch

PEAK = 0.99  # outputs are scaled (never clipped) to stay below this
# Direct-to-reverberant ratio of the synthetic rooms: from a far talker in a live room
# (-6 dB) to a close one (+6 dB). Fixed here rather than a knob nobody would tune.
DRR_DB = (-6.0, 6.0)
# Independent stream per augmentation (see the module docstring).
_REVERB, _SNR, _BANDLIMIT, _GAIN, _SHIFT, _POLARITY, _EQ, _NOISELESS, _CLIP, _QUANTIZE, _SPEED = range(11)
SPEED_STEPS = 100  # speed factors are drawn to 1/100: a rate ratio of small integers, a short resampling kernel
EQ_BANDS = 2  # peaking biquads per shaped signal (DeepFilterNet's and RNNoise's random EQ)


def _range(name: str, value: Sequence[float] | None, positive: bool = False) -> tuple[float, float] | None:
    if value is None:
        return None
    lo_hi = span(f"augment.{name}", value)
    if positive and lo_hi[0] <= 0:
        raise ValueError(f"augment.{name} must be positive, got {list(value)}")
    return lo_hi


def _probability(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augment.{name} must be a probability in [0, 1], got {p}")
    return float(p)


def room_impulse_response(rt60: float, sample_rate: int, rng: np.random.Generator, drr_db: float = 0.0) -> torch.Tensor:
    """A synthetic RIR (float32, unit energy): a direct path, then Gaussian noise whose
    energy decays exponentially, reaching -60 dB at `rt60` seconds (Sabine/Schroeder model).

    Unit energy keeps the speech level roughly where it was; the direct path sits at
    sample 0, so the reverberant speech stays aligned with the dry one (a 'dry' target).
    The tail runs to 1.2 * rt60 (-72 dB): later samples would only cost convolution time.
    """
    n = max(2, int(1.2 * rt60 * sample_rate))
    t = np.arange(1, n) / sample_rate
    tail = rng.standard_normal(n - 1) * 10 ** (-3.0 * t / rt60)  # amplitude: -60 dB energy at rt60
    tail *= 10 ** (-drr_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)  # direct path has energy 1
    rir = np.concatenate([[1.0], tail])
    return torch.from_numpy(rir / np.sqrt(np.sum(rir**2))).float()


def _lowpass(x: torch.Tensor, cutoff: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Two cascaded Butterworth biquads (-24 dB/octave), each row at its own cutoff: a
    band-limited channel. The coefficients are torchaudio's `lowpass_biquad` (Q = 1/sqrt 2);
    one batched `lfilter` runs them on any device, unclamped (the filter is linear and its
    gain never reaches 4; the peak guard below scales the result anyway)."""
    w0 = 2 * math.pi * cutoff.to(x)[:, None] / sample_rate
    alpha, cos = torch.sin(w0) / 2 / (1 / math.sqrt(2)), torch.cos(w0)
    b = torch.cat([(1 - cos) / 2, 1 - cos, (1 - cos) / 2], dim=1)
    a = torch.cat([1 + alpha, -2 * cos, 1 - alpha], dim=1)
    for _ in range(2):
        x = AF.lfilter(x, a, b, clamp=False, batching=True)
    return x


def peaking_coefficients(freq: torch.Tensor, gain_db: torch.Tensor, q: torch.Tensor, sample_rate: int):
    """(a, b) of peaking-EQ biquads, one per row (the Audio EQ Cookbook's): `gain_db` at
    `freq`, unity far from it, bandwidth set by `q`."""
    w0 = 2 * math.pi * freq[:, None] / sample_rate
    amp = 10 ** (gain_db[:, None] / 40)
    alpha = torch.sin(w0) / (2 * q[:, None])
    cos = torch.cos(w0)
    b = torch.cat([1 + alpha * amp, -2 * cos, 1 - alpha * amp], dim=1)
    a = torch.cat([1 + alpha / amp, -2 * cos, 1 - alpha / amp], dim=1)
    return a, b


def _equalize(x: torch.Tensor, bands: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Each row through its own cascade of peaking biquads; `bands` (rows, EQ_BANDS, 3):
    frequency, gain in dB, Q."""
    bands = bands.to(x)
    for k in range(bands.shape[1]):
        a, b = peaking_coefficients(bands[:, k, 0], bands[:, k, 1], bands[:, k, 2], sample_rate)
        x = AF.lfilter(x, a, b, clamp=False, batching=True)
    return x


def _speed(x: torch.Tensor, rates: torch.Tensor, wrap: bool) -> torch.Tensor:
    """Row i played `rates[i] / SPEED_STEPS` times as fast (resampled: pitch and tempo
    together, as a tape or a resampling front end changes them), kept at its length: cut, or
    filled to it with silence (speech: a pause) or, `wrap`, with its own start (noise: no
    gap). One resampling per distinct rate."""
    n, out = x.shape[-1], x.clone()
    for rate in rates.unique().tolist():
        if rate == SPEED_STEPS:
            continue
        rows = (rates == rate).nonzero().squeeze(1).to(x.device)
        # torchaudio.functional, not a cached transforms.Resample: the transform's kernel
        # differs by 1e-6, which moves a trained model, and the default recipe was chosen
        # with this one (building the kernel is only an eighth of the stage's time)
        y = AF.resample(x[rows], int(rate), SPEED_STEPS)[..., :n]
        if y.shape[-1] < n:
            fill = y[..., : n - y.shape[-1]] if wrap else torch.zeros_like(y[..., : n - y.shape[-1]])
            y = torch.cat([y, fill], dim=-1)
        out[rows] = y
    return out


def _roll(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Row i rolled by shift[i], as torch.roll rolls it."""
    if staged.batched_path(x.device):  # one gather
        at = (torch.arange(x.shape[-1], device=x.device) - shift.to(x.device)[:, None]) % x.shape[-1]
        return torch.gather(x, 1, at)
    return torch.stack([torch.roll(row, s) for row, s in zip(x, shift.tolist())])


def _rows(x: torch.Tensor, on: torch.Tensor, transform) -> torch.Tensor:
    """`transform` of the rows where `on`, the others kept: all rows then a select, or only
    those rows, as `staged.batched_path` says for the device."""
    if staged.batched_path(x.device):
        return torch.where(on[:, None], transform(x, slice(None)), x)
    index = on.nonzero().squeeze(1)
    out = x.clone()
    if len(index):
        out[index] = transform(x[index], index)
    return out


class Augment:
    """Re-mixes, reverberates, band-limits, re-levels, shifts and flips training pairs.

    Applied in a fixed order: speed, EQ, reverb, SNR, noise-free, band-limit, gain, shift,
    polarity, then clipping and quantisation of the input alone. The speed stage
    (`p_speed`, `speed`: DeepFilterNet's 0.9-1.1) resamples speech and noise each by its own
    factor: other voices' pitch and tempo, other machines' hum (a factor above 1 also
    low-passes, at Nyquist / factor: 7.3 kHz of 8 at 1.1). The EQ shapes speech and
    noise each through its own random peaking filters (`p_eq`, `eq_db`: a talker's and a
    microphone's colouring, a noise's own spectrum; the shaped speech is the target: the
    model is to remove noise, not colour). Reverb comes before the SNR re-mix so that the
    drawn SNR is the one of the speech actually in the mixture (reverberant), as in
    DNS-style recipes. `p_noiseless` makes the input the clean speech itself (a model must
    learn to leave clean speech alone, RNNoise's 1 in 8). The channel (band-limit) and
    level (gain) apply to the finished recording; shift and polarity change no levels.
    Clipping (`p_clip`, at `clip_db` below the input's peak) and quantisation (`p_quantize`,
    to `quantize_bits`) damage the input only: the target stays clean. The band limit
    filters input and target alike (`bandlimit_target: filtered`), or the input alone
    (`masked`, RNNoise's recipe): the batch then carries each row's `loss_cutoff_hz`, and
    the task's loss compares output and target below it only (`AudioTask.loss_view`), so
    the model is not asked for what the channel removed.
    """

    def __init__(
        self,
        sample_rate: int,
        gain_db: Sequence[float] | None = None,
        snr_db: Sequence[float] | None = None,
        shift_seconds: float = 0.0,
        p_polarity: float = 0.0,
        p_bandlimit: float = 0.0,
        bandlimit_hz: Sequence[float] = (3000.0, 7000.0),
        p_reverb: float = 0.0,
        rt60_seconds: Sequence[float] = (0.2, 0.8),
        reverb_target: str = "wet",
        p_eq: float = 0.0,
        eq_db: Sequence[float] = (-15.0, 15.0),
        p_noiseless: float = 0.0,
        p_clip: float = 0.0,
        clip_db: Sequence[float] = (-20.0, -3.0),
        p_quantize: float = 0.0,
        quantize_bits: Sequence[float] = (8, 16),
        p_speed: float = 0.0,
        speed: Sequence[float] = (0.9, 1.1),
        bandlimit_target: str = "filtered",
        seed: int = 0,
    ):
        if sample_rate <= 0:
            raise ValueError(f"augment.sample_rate must be positive, got {sample_rate}")
        if not shift_seconds >= 0:
            raise ValueError(f"augment.shift_seconds must be >= 0, got {shift_seconds}")
        if reverb_target not in ("wet", "dry"):
            raise ValueError(f"augment.reverb_target must be 'wet' or 'dry', got {reverb_target!r}")
        if bandlimit_target not in ("filtered", "masked"):
            raise ValueError(f"augment.bandlimit_target must be 'filtered' or 'masked', got {bandlimit_target!r}")
        self.bandlimit_target = bandlimit_target
        self.sample_rate = int(sample_rate)
        self.gain_db = _range("gain_db", gain_db)
        self.snr_db = _range("snr_db", snr_db)
        self.shift = round(shift_seconds * sample_rate)
        self.p_polarity = _probability("p_polarity", p_polarity)
        self.p_bandlimit = _probability("p_bandlimit", p_bandlimit)
        self.bandlimit_hz = _range("bandlimit_hz", bandlimit_hz, positive=True)
        self.p_reverb = _probability("p_reverb", p_reverb)
        self.rt60_seconds = _range("rt60_seconds", rt60_seconds, positive=True)
        self.reverb_target = reverb_target
        self.p_eq = _probability("p_eq", p_eq)
        self.eq_db = _range("eq_db", eq_db)
        self.p_noiseless = _probability("p_noiseless", p_noiseless)
        self.p_clip = _probability("p_clip", p_clip)
        self.clip_db = _range("clip_db", clip_db)
        if self.clip_db[1] > 0:
            raise ValueError(f"augment.clip_db is below the peak, so <= 0 dB; got {list(clip_db)}")
        self.p_quantize = _probability("p_quantize", p_quantize)
        self.quantize_bits = _range("quantize_bits", quantize_bits, positive=True)
        self.p_speed = _probability("p_speed", p_speed)
        self.speed = _range("speed", speed, positive=True)
        if not (0.5 <= self.speed[0] and self.speed[1] <= 2.0):
            raise ValueError(f"augment.speed: factors between 0.5 and 2 (1: unchanged), got {list(speed)}")
        self.seed = int(seed) % 2**64  # SeedSequence wants non-negative entropy
        self.active = bool(
            self.gain_db or self.snr_db or self.shift or self.p_polarity or self.p_bandlimit or self.p_reverb
            or self.p_eq or self.p_noiseless or self.p_clip or self.p_quantize or self.p_speed
        )  # fmt: skip

    def _rng(self, key: int, stage: int) -> np.random.Generator:
        # A sequence, not an arithmetic mix: no two (seed, key) pairs can share a stream.
        return np.random.default_rng([self.seed, int(key), stage])

    def _rir_length(self) -> int:
        return max(2, int(1.2 * self.rt60_seconds[1] * self.sample_rate))

    def plan(self, keys: list[int]) -> dict[str, torch.Tensor]:
        """The loader's stage (trainer/data/staged.py): every draw of every example, from
        each augmentation's own stream of `(seed, key)`. Keys are prefixed `augment.`."""
        b, sr = len(keys), self.sample_rate
        plan: dict[str, np.ndarray] = {}
        if self.p_reverb:
            on, rir = np.zeros(b, bool), np.zeros((b, self._rir_length()), np.float32)
            for i, key in enumerate(keys):
                if (rng := self._rng(key, _REVERB)).random() < self.p_reverb:
                    r = room_impulse_response(rng.uniform(*self.rt60_seconds), sr, rng, rng.uniform(*DRR_DB))
                    on[i], rir[i, : len(r)] = True, r.numpy()
            plan.update(reverb=on, rir=rir)
        if self.snr_db:
            plan["snr_db"] = np.array([self._rng(k, _SNR).uniform(*self.snr_db) for k in keys])
        if self.p_bandlimit:
            on, cutoff = np.zeros(b, bool), np.zeros(b)
            for i, key in enumerate(keys):
                if (rng := self._rng(key, _BANDLIMIT)).random() < self.p_bandlimit:
                    on[i], cutoff[i] = True, min(rng.uniform(*self.bandlimit_hz), 0.45 * sr)  # below Nyquist
            plan.update(bandlimit=on, cutoff_hz=cutoff)
        if self.gain_db:
            plan["gain"] = np.array([10 ** (self._rng(k, _GAIN).uniform(*self.gain_db) / 20) for k in keys])
        if self.shift:
            plan["shift"] = np.array(
                [self._rng(k, _SHIFT).integers(-self.shift, self.shift, endpoint=True) for k in keys], np.int64
            )
        if self.p_polarity:
            plan["flip"] = np.array([self._rng(k, _POLARITY).random() < self.p_polarity for k in keys])
        if self.p_eq:  # speech's bands, then the noise's: (rows, 2, EQ_BANDS, 3)
            on, bands = np.zeros(b, bool), np.zeros((b, 2, EQ_BANDS, 3), np.float32)
            for i, key in enumerate(keys):
                if (rng := self._rng(key, _EQ)).random() < self.p_eq:
                    on[i] = True
                    size = (2, EQ_BANDS)
                    bands[i, ..., 0] = np.exp(rng.uniform(math.log(80.0), math.log(0.45 * sr), size))
                    bands[i, ..., 1] = rng.uniform(*self.eq_db, size)
                    bands[i, ..., 2] = np.exp(rng.uniform(math.log(0.5), math.log(2.0), size))
            plan.update(eq=on, eq_bands=bands)
        if self.p_noiseless:
            plan["noiseless"] = np.array([self._rng(k, _NOISELESS).random() < self.p_noiseless for k in keys])
        if self.p_clip:
            draws = [self._rng(k, _CLIP) for k in keys]
            plan["clip"] = np.array([r.random() < self.p_clip for r in draws])
            plan["clip_db"] = np.array([r.uniform(*self.clip_db) for r in draws])
        if self.p_quantize:
            draws = [self._rng(k, _QUANTIZE) for k in keys]
            plan["quantize"] = np.array([r.random() < self.p_quantize for r in draws])
            plan["bits"] = np.array([round(r.uniform(*self.quantize_bits)) for r in draws], np.int64)
        if self.p_speed:  # speech's rate, then the noise's, in 1/SPEED_STEPS
            rates = np.full((b, 2), SPEED_STEPS, np.int64)
            for i, key in enumerate(keys):
                if (rng := self._rng(key, _SPEED)).random() < self.p_speed:
                    rates[i] = np.round(rng.uniform(*self.speed, 2) * SPEED_STEPS)
            plan["speed_rates"] = rates
        return {f"augment.{k}": torch.from_numpy(v) for k, v in plan.items()}

    def apply(self, batch: dict[str, torch.Tensor], plan: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batched stage, on the batch's device: `batch` (clean, maybe noisy; rows of
        equal length) transformed as `plan` says. The input tensors are not touched."""
        plan = {k.removeprefix("augment."): v for k, v in plan.items()}
        clean = batch["clean"].float()
        noisy = batch["noisy"].float() if "noisy" in batch else None
        # the noise alone, where a stage needs it (each batch-sized temporary costs a loader time)
        needs_noise = "reverb" in plan or "snr_db" in plan or "eq" in plan or "speed_rates" in plan
        noise = noisy - clean if noisy is not None and needs_noise else None

        if "speed_rates" in plan:
            rates = plan["speed_rates"]
            clean = _speed(clean, rates[:, 0], wrap=False)
            if noise is not None:
                noise = _speed(noise, rates[:, 1], wrap=True)
                noisy = clean + noise

        if "eq" in plan:  # speech and noise each shaped by its own filters; the shaped speech is the target
            bands, on = plan["eq_bands"], plan["eq"]
            clean = _rows(clean, on, lambda x, i: _equalize(x, bands[i, 0], self.sample_rate))
            if noise is not None:
                noise = _rows(noise, on, lambda x, i: _equalize(x, bands[i, 1], self.sample_rate))
                noisy = clean + noise

        speech = clean  # what the listener hears, so what the SNR is measured on
        if "reverb" in plan:
            n, rir = clean.shape[-1], plan["rir"].to(clean)
            speech = _rows(clean, plan["reverb"], lambda x, i: AF.fftconvolve(x, rir[i])[..., :n])
            if noise is not None:
                noisy = torch.where(plan["reverb"][:, None], speech + noise, noisy)
            if self.reverb_target == "wet":
                clean = speech

        if "snr_db" in plan and noise is not None:
            p_speech, p_noise = speech.double().pow(2).mean(1), noise.double().pow(2).mean(1)
            settable = (p_speech > 0) & (p_noise > 0)  # silence or a noiseless pair has no SNR to set
            power = 10 ** (plan["snr_db"].to(p_noise) / 10)
            scale = torch.where(settable, torch.sqrt(p_speech / (p_noise * power).clamp_min(1e-300)), 1.0)
            noisy = torch.where(settable[:, None], speech + noise * scale[:, None].float(), noisy)

        if "noiseless" in plan and noisy is not None:
            noisy = torch.where(plan["noiseless"].to(clean.device)[:, None], speech, noisy)

        loss_cutoff = None
        if "bandlimit" in plan:
            cutoff = plan["cutoff_hz"]
            if self.bandlimit_target == "filtered":
                clean = _rows(clean, plan["bandlimit"], lambda x, i: _lowpass(x, cutoff[i], self.sample_rate))
            else:  # the loss looks below the cut-off only; elsewhere (no band limit) at everything
                loss_cutoff = torch.where(plan["bandlimit"], cutoff, self.sample_rate / 2).float()
            if noisy is not None:
                noisy = _rows(noisy, plan["bandlimit"], lambda x, i: _lowpass(x, cutoff[i], self.sample_rate))

        # Gain, the peak guard and polarity are one factor per row. Re-mixing, reverb and
        # gain all change levels: scale down, never clip (the peak after the gain is
        # gain * peak). Polarity and the shift change no levels.
        factor = plan["gain"].to(clean)[:, None] if "gain" in plan else torch.ones_like(clean[:, :1])
        peak = clean.abs().amax(1, keepdim=True)
        if noisy is not None:
            peak = torch.maximum(peak, noisy.abs().amax(1, keepdim=True))
        factor = torch.where(factor * peak > PEAK, PEAK / peak, factor)
        if "flip" in plan:
            factor = torch.where(plan["flip"].to(clean.device)[:, None], -factor, factor)
        clean = clean * factor
        noisy = noisy * factor if noisy is not None else None

        if "shift" in plan:
            shift = plan["shift"]
            clean = _roll(clean, shift)
            noisy = _roll(noisy, shift) if noisy is not None else None

        # the input's channel alone: a clipped or coarsely quantised recording of clean speech
        if "clip" in plan and noisy is not None:
            limit = noisy.abs().amax(1, keepdim=True) * 10 ** (plan["clip_db"].to(noisy)[:, None] / 20)
            noisy = torch.where(plan["clip"].to(noisy.device)[:, None], torch.clamp(noisy, -limit, limit), noisy)
        if "quantize" in plan and noisy is not None:
            steps = (2.0 ** (plan["bits"].to(noisy) - 1))[:, None]
            noisy = torch.where(plan["quantize"].to(noisy.device)[:, None], torch.round(noisy * steps) / steps, noisy)

        out = dict(batch, clean=clean.contiguous())
        if noisy is not None:
            out["noisy"] = noisy.contiguous()
        if loss_cutoff is not None:
            out["loss_cutoff_hz"] = loss_cutoff.to(clean.device)
        return out

    def __call__(self, example: dict[str, torch.Tensor], key: int) -> dict[str, torch.Tensor]:
        """One example, both stages: a new example with the same keys and length."""
        if not self.active:
            return dict(example)
        batch = {k: v[None] for k, v in example.items()}
        return unbatch(self.apply(batch, self.plan([key])))[0]

    def around(self, stages: Stages) -> Stages:
        """`stages` with this augmentation after them: its plan drawn beside the source's
        ingredients, and applied to the finished batch."""
        return Stages(_Planned(stages.draw, self), _Applied(stages.finish, self), stages.size)


class _Planned:
    def __init__(self, draw, augment: Augment):
        self.draw, self.augment = draw, augment

    def __call__(self, keys: list[int]) -> dict[str, torch.Tensor]:
        return {**self.draw(keys), **self.augment.plan(keys)}


class _Applied:
    def __init__(self, finish, augment: Augment):
        self.finish, self.augment = finish, augment

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        plan = {k: v for k, v in batch.items() if k.startswith("augment.")}
        return self.augment.apply(self.finish({k: v for k, v in batch.items() if k not in plan}), plan)
