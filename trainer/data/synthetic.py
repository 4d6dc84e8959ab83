"""The embedded dataset: procedurally generated speech-like audio mixed with noise.

Nothing is downloaded or read from disk. It is organised like a real on-the-fly mixing
recipe (DNS challenge style): a *corpus* of clean utterances and a corpus of noise clips,
each rendered on first use and kept in memory, and training examples that pick one of
each, crop, and mix them at a random SNR and level. Rendering is the expensive part
(milliseconds per clip); mixing costs microseconds, so after the first few hundred steps
the model never waits for data.

Every draw is a pure function of `(seed, split, index)`: a run is reproducible whatever
the number of loader workers, and a resumed run sees exactly the batches it would have
seen. The validation split uses its own seed stream (unseen utterances, talkers, noises).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.data import noise, voice

TRAIN, VALID = 0, 1
_CLEAN, _NOISE, _MIX = 0, 1, 2


class SyntheticSpeech:
    """Noisy/clean pairs. `train()` is unbounded (indexed by a global example number);
    `valid()` is a fixed set of `val_size` examples."""

    infinite = True

    def __init__(
        self,
        sample_rate: int = 16000,
        segment_seconds: float = 1.0,
        snr_db: Sequence[float] = (-5.0, 15.0),
        level_db: Sequence[float] = (-35.0, -15.0),
        families: Sequence[str] = tuple(noise.FAMILIES),
        p_modulate: float = 0.3,
        p_reverb: float = 0.15,
        corpus_size: int = 1024,
        noise_corpus_size: int = 512,
        val_size: int = 128,
        seed: int = 0,
    ):
        unknown = set(families) - set(noise.FAMILIES)
        if unknown:
            raise ValueError(f"data.families: unknown noise families {sorted(unknown)}; known: {sorted(noise.FAMILIES)}")
        if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
            raise ValueError(f"data.snr_db must be [low, high] with low <= high, got {list(snr_db)}")
        if corpus_size < 1 or noise_corpus_size < 1:
            raise ValueError("data.corpus_size and data.noise_corpus_size must be >= 1")
        self.sample_rate = sample_rate
        self.length = int(round(segment_seconds * sample_rate))
        self.clip_length = 2 * self.length  # corpus clips are longer than a segment: crops vary
        self.snr_db = tuple(snr_db)
        self.level_db = tuple(level_db)
        self.families = list(families)
        self.p_modulate = p_modulate
        self.p_reverb = p_reverb
        self.corpus_size = corpus_size
        self.noise_corpus_size = noise_corpus_size
        self.val_size = val_size
        self.seed = seed
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def _clip(self, split: int, kind: int, index: int) -> np.ndarray:
        key = (split, kind, index)
        clip = self._cache.get(key)
        if clip is None:
            rng = np.random.default_rng([self.seed, split, kind, index])
            n, sr = self.clip_length, self.sample_rate
            if kind == _CLEAN:
                clip = voice.render(rng, n, sr)
            else:
                clip = noise.make_noise(rng, n, sr, self.families, self.p_modulate, self.p_reverb)[0]
            clip = clip.astype(np.float32)
            if split == TRAIN:  # validation examples are kept whole instead (see _Split)
                self._cache[key] = clip
        return clip

    def _crop(self, rng: np.random.Generator, clip: np.ndarray) -> np.ndarray:
        start = int(rng.integers(0, len(clip) - self.length + 1))
        return clip[start : start + self.length].astype(np.float64)

    def example(self, split: int, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, split, _MIX, index])
        if split == TRAIN:
            u, v = int(rng.integers(self.corpus_size)), int(rng.integers(self.noise_corpus_size))
        else:
            u = v = index
        clean = self._crop(rng, self._clip(split, _CLEAN, u))
        clean_rms = np.sqrt(np.mean(clean**2)) + 1e-8
        if not self.families:
            return {"clean": torch.from_numpy((clean / clean_rms * 0.05).astype(np.float32))}
        nz = self._crop(rng, self._clip(split, _NOISE, v))
        snr = rng.uniform(*self.snr_db)
        noisy = clean + nz * (clean_rms / (np.sqrt(np.mean(nz**2)) + 1e-8)) * 10 ** (-snr / 20)
        # Same gain on both so the pair stays aligned in level; keep the mixture unclipped.
        gain = 10 ** (rng.uniform(*self.level_db) / 20) / clean_rms
        gain = min(gain, 0.99 / (np.abs(noisy).max() + 1e-12))
        return {
            "noisy": torch.from_numpy((noisy * gain).astype(np.float32)),
            "clean": torch.from_numpy((clean * gain).astype(np.float32)),
        }

    def train(self) -> Dataset:
        return _Split(self, TRAIN, None)

    def valid(self) -> Dataset:
        return _Split(self, VALID, self.val_size)


class _Split(Dataset):
    def __init__(self, source: SyntheticSpeech, split: int, size: int | None):
        self.source, self.split, self.size = source, split, size
        self._memo: dict[int, dict[str, torch.Tensor]] = {}  # the fixed validation set, rendered once

    def __len__(self) -> int:
        return self.size if self.size is not None else 2**62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.size is None:
            return self.source.example(self.split, int(index))
        if index not in self._memo:
            self._memo[index] = self.source.example(self.split, int(index))
        return self._memo[index]
