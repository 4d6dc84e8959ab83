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

from collections.abc import Sequence

import numpy as np
import torch
import torchaudio.functional as AF
from torch.utils.data import Dataset

from trainer.data.checks import span

PEAK = 0.99  # outputs are scaled (never clipped) to stay below this
# Direct-to-reverberant ratio of the synthetic rooms: from a far talker in a live room
# (-6 dB) to a close one (+6 dB). Fixed here rather than a knob nobody would tune.
DRR_DB = (-6.0, 6.0)
# Independent stream per augmentation (see the module docstring).
_REVERB, _SNR, _BANDLIMIT, _GAIN, _SHIFT, _POLARITY = range(6)


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


def _lowpass(x: torch.Tensor, sample_rate: int, cutoff: float) -> torch.Tensor:
    """Two cascaded Butterworth biquads (-24 dB/octave): a band-limited channel.

    torchaudio's lfilter clamps to [-1, 1]; the filter is linear, so run it with headroom
    (its gain never reaches 4) and scale back rather than let it clip.
    """
    scale = 4.0 * float(x.abs().max()) + 1e-12
    y = x / scale
    for _ in range(2):
        y = AF.lowpass_biquad(y, sample_rate, cutoff)
    return y * scale


class Augment:
    """Re-mixes, reverberates, band-limits, re-levels, shifts and flips training pairs.

    Applied in a fixed order: reverb, SNR, band-limit, gain, shift, polarity. Reverb comes
    before the SNR re-mix so that the drawn SNR is the one of the speech actually in the
    mixture (reverberant), as in DNS-style recipes; the channel (band-limit) and level
    (gain) apply to the finished recording; shift and polarity change no levels.
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
        seed: int = 0,
    ):
        if sample_rate <= 0:
            raise ValueError(f"augment.sample_rate must be positive, got {sample_rate}")
        if not shift_seconds >= 0:
            raise ValueError(f"augment.shift_seconds must be >= 0, got {shift_seconds}")
        if reverb_target not in ("wet", "dry"):
            raise ValueError(f"augment.reverb_target must be 'wet' or 'dry', got {reverb_target!r}")
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
        self.seed = int(seed) % 2**64  # SeedSequence wants non-negative entropy
        self.active = bool(
            self.gain_db or self.snr_db or self.shift or self.p_polarity or self.p_bandlimit or self.p_reverb
        )

    def _rng(self, key: int, stage: int) -> np.random.Generator:
        # A sequence, not an arithmetic mix: no two (seed, key) pairs can share a stream.
        return np.random.default_rng([self.seed, int(key), stage])

    def __call__(self, example: dict[str, torch.Tensor], key: int) -> dict[str, torch.Tensor]:
        """A new example with the same keys and length; the input tensors are not touched."""
        if not self.active:
            return dict(example)
        clean = example["clean"].float()
        noisy = example["noisy"].float() if "noisy" in example else None
        noise = noisy - clean if noisy is not None else None
        sr = self.sample_rate

        if self.p_reverb and (rng := self._rng(key, _REVERB)).random() < self.p_reverb:
            rir = room_impulse_response(rng.uniform(*self.rt60_seconds), sr, rng, rng.uniform(*DRR_DB))
            wet = AF.fftconvolve(clean, rir)[: clean.shape[-1]]
            if noise is not None:
                noisy = wet + noise
            if self.reverb_target == "wet":
                clean = wet
            speech = wet  # what the listener hears, so what the SNR is measured on
        else:
            speech = clean

        if self.snr_db and noise is not None:
            snr = self._rng(key, _SNR).uniform(*self.snr_db)
            p_speech, p_noise = speech.double().pow(2).mean(), noise.double().pow(2).mean()
            if p_speech > 0 and p_noise > 0:  # silence or a noiseless pair has no SNR to set
                noise = (noise.double() * torch.sqrt(p_speech / (p_noise * 10 ** (snr / 10)))).float()
                noisy = speech + noise

        if self.p_bandlimit and (rng := self._rng(key, _BANDLIMIT)).random() < self.p_bandlimit:
            cutoff = min(rng.uniform(*self.bandlimit_hz), 0.45 * sr)  # biquads need it below Nyquist
            clean = _lowpass(clean, sr, cutoff)
            noisy = _lowpass(noisy, sr, cutoff) if noisy is not None else None

        if self.gain_db:
            gain = 10 ** (self._rng(key, _GAIN).uniform(*self.gain_db) / 20)
            clean = clean * gain
            noisy = noisy * gain if noisy is not None else None

        # Re-mixing, reverb and gain all change levels: scale down, never clip.
        peak = max(float(clean.abs().max()), float(noisy.abs().max()) if noisy is not None else 0.0)
        if peak > PEAK:
            clean = clean * (PEAK / peak)
            noisy = noisy * (PEAK / peak) if noisy is not None else None

        if self.shift:
            shift = int(self._rng(key, _SHIFT).integers(-self.shift, self.shift, endpoint=True))
            clean = torch.roll(clean, shift)
            noisy = torch.roll(noisy, shift) if noisy is not None else None

        if self.p_polarity and self._rng(key, _POLARITY).random() < self.p_polarity:
            clean = -clean
            noisy = -noisy if noisy is not None else None

        out = dict(example, clean=clean.contiguous())
        if noisy is not None:
            out["noisy"] = noisy.contiguous()
        return out


class Augmented(Dataset):
    """`dataset` with `augment` applied to each example, keyed by the draw key it was fetched with."""

    def __init__(self, dataset: Dataset, augment: Augment):
        self.dataset, self.augment = dataset, augment

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        return self.augment(self.dataset[key], key)

    def __getitems__(self, keys: list[int]) -> list[dict[str, torch.Tensor]]:
        """Batched fetch: keep the dataset's own batched path (the embedded corpus renders
        a batch at once), then augment each example with its own key."""
        fetch = getattr(self.dataset, "__getitems__", None)
        items = fetch(keys) if fetch is not None else [self.dataset[k] for k in keys]
        return [self.augment(item, key) for item, key in zip(items, keys)]
