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
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.data import corpus, noise, staged, voice
from trainer.data.checks import span
from trainer.data.corpus import TRAIN, VALID
from trainer.data.keyed import UNBOUNDED, Keyed
from trainer.data.mixing import mix, rms
from trainer.data.staged import Batch, Staged, Stages, unbatch

_MIX = 2  # the draw's own random stream: (seed, split, _MIX, index); 0 and 1 render the corpus


def _crop(clips: torch.Tensor, which: torch.Tensor, start: torch.Tensor, n: int) -> torch.Tensor:
    """Rows `clips[which[i], start[i] : start[i] + n]` as a fresh (batch, n) tensor."""
    if staged.batched_path(clips.device):  # one indexing of the clips' window view: one kernel
        return clips.unfold(1, n, 1)[which.to(clips.device), start.to(clips.device)]
    source, out = clips.numpy(), np.empty((len(which), n), np.float32)
    for row, (c, s) in enumerate(zip(which.tolist(), start.tolist())):  # row copies: 3x faster than indexing
        out[row] = source[c, s : s + n]
    return torch.from_numpy(out)


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
        families: Sequence[str] = noise.DEFAULT,
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
        self._on_device: dict[tuple[int, str, str], torch.Tensor] = {}

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

    def draw(self, split: int, indices: list[int]) -> Batch:
        """The loader's stage (trainer/data/staged.py): each example's choices of clip,
        crop, SNR and level, from its own random stream."""
        b = len(indices)
        clips = np.empty((4, b), np.int64)  # clean clip, its crop start, noise clip, its crop start
        snr, level = np.zeros(b, np.float32), np.zeros(b, np.float32)
        span = self.clip_length - self.length + 1
        for row, index in enumerate(indices):
            rng = np.random.default_rng([self.seed, split, _MIX, int(index)])
            if split == TRAIN:
                clips[0, row], clips[2, row] = rng.integers(self.corpus_size), rng.integers(self.noise_corpus_size)
            else:
                clips[0, row] = clips[2, row] = int(index)
            clips[1, row] = rng.integers(0, span)
            if self.families:
                clips[3, row] = rng.integers(0, span)
                snr[row], level[row] = rng.uniform(*self.snr_db), rng.uniform(*self.level_db)
        clips_t = torch.from_numpy(clips)
        return {
            "clean_clip": clips_t[0],
            "clean_start": clips_t[1],
            "noise_clip": clips_t[2],
            "noise_start": clips_t[3],
            "snr_db": torch.from_numpy(snr),
            "level_db": torch.from_numpy(level),
        }

    def finish(self, split: int, batch: Batch) -> Batch:
        """The batched stage, on the batch's device: crop the corpus and mix (one vectorised
        mix for the whole batch)."""
        device = batch["clean_clip"].device
        clean = _crop(self._clips(split, "clean", device), batch["clean_clip"], batch["clean_start"], self.length)
        if not self.families:
            return {"clean": clean / (rms(clean) + 1e-8) * 0.05}
        noise = _crop(self._clips(split, "noise", device), batch["noise_clip"], batch["noise_start"], self.length)
        noisy, clean = mix(clean, noise, batch["snr_db"], batch["level_db"])  # in place: fresh crops
        return {"noisy": noisy, "clean": clean}

    def _clips(self, split: int, kind: str, device: torch.device) -> torch.Tensor:
        """The split's clips as one (clips, clip_length) tensor on `device` (the corpus's
        own memory on the CPU; one copy per accelerator, ~200 MB at the default size)."""
        key = (split, kind, str(device))
        if key not in self._on_device:
            clips = torch.from_numpy(getattr(self.corpus(split), kind))
            self._on_device[key] = clips.to(device) if device.type != "cpu" else clips
        return self._on_device[key]

    def examples(self, split: int, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """Finished examples, both stages in the caller's process."""
        return unbatch(self.finish(split, self.draw(split, indices)))

    def example(self, split: int, index: int) -> dict[str, torch.Tensor]:
        return self.examples(split, [index])[0]

    def describe(self, split: int, indices: list[int]) -> list[dict[str, str]]:
        """What each example is made of, for people (the listening page's filters): its noise
        families, its SNR in 5 dB bands, and its talker's kind; the same draws as rendering."""
        out = []
        snrs = self.draw(split, indices)["snr_db"].tolist()
        for index, snr in zip(indices, snrs):
            clean = np.random.default_rng([self.seed, split, corpus.CLEAN, int(index)])
            about = {"talker": voice.random_speaker(clean).kind}
            if self.families:
                picked = noise.pick_families(np.random.default_rng([self.seed, split, corpus.NOISE, int(index)]),
                                             self.families)  # fmt: skip
                low = 5 * math.floor(snr / 5)
                about |= {"noise": "+".join(sorted(picked)), "snr": f"{low} to {low + 5} dB"}
            out.append(about)
        return out

    def train_stages(self) -> Stages:
        self.corpus(TRAIN)  # now, in the main process: loader workers and DDP ranks then share it
        return Stages(functools.partial(self.draw, TRAIN), functools.partial(self.finish, TRAIN), UNBOUNDED)

    def train(self) -> Dataset:
        return Staged(self.train_stages())

    def valid(self) -> Dataset:
        self.corpus(VALID)
        return Keyed.fixed_set(functools.partial(self.examples, VALID), self.val_size, memo=True)
