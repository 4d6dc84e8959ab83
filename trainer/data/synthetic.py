"""The embedded dataset: procedurally generated speech-like audio mixed with noise.

Nothing is downloaded. It is organised like a real on-the-fly mixing recipe (DNS challenge
style): a *corpus* of clean utterances and a corpus of noise clips (trainer/data/corpus.py:
rendered once in parallel, shared by the jobs of a process, cached on disk under
`cache_dir`), and training examples that pick one of each, crop, and mix them at a random
SNR and level. Rendering is the expensive part (milliseconds per clip); mixing costs
microseconds per example.

Every draw is a pure function of `(seed, split, index)`: a run is reproducible whatever
the number of loader workers, and a resumed run sees exactly the batches it would have
seen. The validation split uses its own seed stream (unseen utterances, talkers, noises).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.data import corpus, noise
from trainer.data.checks import span
from trainer.data.corpus import TRAIN, VALID
from trainer.data.keyed import Keyed
from trainer.data.mixing import mix

_MIX = 2  # the draw's own random stream: (seed, split, _MIX, index); 0 and 1 render the corpus


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
        cache_dir: str | None = None,
    ):
        unknown = set(families) - set(noise.FAMILIES)
        if unknown:
            raise ValueError(
                f"data.families: unknown noise families {sorted(unknown)}; known: {sorted(noise.FAMILIES)}"
            )
        if corpus_size < 1 or noise_corpus_size < 1:
            raise ValueError("data.corpus_size and data.noise_corpus_size must be >= 1")
        self.sample_rate = sample_rate
        self.length = int(round(segment_seconds * sample_rate))
        self.clip_length = 2 * self.length  # corpus clips are longer than a segment: crops vary
        self.snr_db = span("data.snr_db", snr_db)
        self.level_db = tuple(level_db)
        self.families = list(families)
        self.p_modulate = p_modulate
        self.p_reverb = p_reverb
        self.corpus_size = corpus_size
        self.noise_corpus_size = noise_corpus_size
        self.val_size = val_size
        self.seed = seed
        self.cache_dir = cache_dir
        self._corpora: dict[int, corpus.Corpus] = {}

    def corpus(self, split: int) -> corpus.Corpus:
        """The split's clean and noise clips, rendered (or read from the cache) on first use."""
        if split not in self._corpora:
            size = self.corpus_size if split == TRAIN else self.val_size
            noises = self.noise_corpus_size if split == TRAIN else self.val_size
            spec = corpus.Spec(
                self.seed,
                split,
                self.sample_rate,
                self.clip_length,
                size,
                noises if self.families else 0,
                tuple(self.families),
                self.p_modulate,
                self.p_reverb,
            )
            self._corpora[split] = corpus.corpus(spec, self.cache_dir)
        return self._corpora[split]

    def examples(self, split: int, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """A batch of examples: per-example draws, then one vectorised mix for all of them
        (the per-example Python overhead, not the arithmetic, is what a loader pays for)."""
        n = self.length
        clean = np.empty((len(indices), n), np.float32)
        nz = np.empty_like(clean)
        snr = np.empty(len(indices), np.float32)
        level = np.empty_like(snr)
        clips = self.corpus(split)
        for row, index in enumerate(indices):
            rng = np.random.default_rng([self.seed, split, _MIX, int(index)])
            if split == TRAIN:
                u, v = int(rng.integers(self.corpus_size)), int(rng.integers(self.noise_corpus_size))
            else:
                u = v = int(index)
            c = clips.clean[u]
            start = int(rng.integers(0, len(c) - n + 1))
            clean[row] = c[start : start + n]
            if self.families:
                w = clips.noise[v]
                start = int(rng.integers(0, len(w) - n + 1))
                nz[row] = w[start : start + n]
                snr[row] = rng.uniform(*self.snr_db)
                level[row] = rng.uniform(*self.level_db)
        if not self.families:
            clean = torch.from_numpy(clean / (np.sqrt(np.mean(clean**2, axis=1, keepdims=True)) + 1e-8) * 0.05)
            return [{"clean": x} for x in clean]
        noisy, clean = mix(clean, nz, snr, level)  # in place: clean and nz are this batch's own buffers
        return [{"noisy": a, "clean": b} for a, b in zip(torch.from_numpy(noisy), torch.from_numpy(clean))]

    def example(self, split: int, index: int) -> dict[str, torch.Tensor]:
        return self.examples(split, [index])[0]

    def train(self) -> Dataset:
        self.corpus(TRAIN)  # now, in the main process: loader workers and DDP ranks then share it
        return Keyed.draws(functools.partial(self.examples, TRAIN))

    def valid(self) -> Dataset:
        self.corpus(VALID)
        return Keyed.fixed_set(functools.partial(self.examples, VALID), self.val_size, memo=True)
