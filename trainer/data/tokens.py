"""Embedded data for the transducer task: utterances that are sequences of tokens, each token
rendered as its own acoustic pattern. Nothing is downloaded or read from disk.

Token `k` (1..vocab) is a two-partial chord, a "formant pair": a low partial from one
log-spaced grid, a high partial from another, gliding up or down by `glide` over the
token. An utterance has `tokens` such tokens, each of random duration and level, separated
by silent gaps of random length (which is what tells "a a" from "a"), spoken by a random
"talker" (all frequencies scaled together by up to `talker_shift`), in white or pink noise
(a random crop of one of 16 pre-rendered clips) at a random SNR, at a random level, and
padded with zeros to a fixed length (with its true length alongside), so every batch has
one shape.

Every draw is a pure function of `(seed, split, index)`, like the enhancement data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from trainer.data.checks import span
from trainer.data.keyed import Keyed
from trainer.data.synthetic import TRAIN, VALID


def token_table(vocab: int, low_hz=(220.0, 900.0), high_hz=(1100.0, 3600.0)) -> list[tuple[float, float, int]]:
    """(low partial Hz, high partial Hz, glide direction) for tokens 1..vocab."""
    per_grid = max(1, math.ceil(math.sqrt(vocab / 2)))
    lows, highs = np.geomspace(*low_hz, per_grid), np.geomspace(*high_hz, per_grid)
    table = [(float(lo), float(hi), g) for g in (1, -1) for lo in lows for hi in highs]
    return table[:vocab]


class SyntheticTokens:
    infinite = True

    def __init__(
        self,
        sample_rate: int = 16000,
        vocab: int = 12,
        tokens: Sequence[int] = (1, 5),
        token_ms: Sequence[float] = (50.0, 150.0),
        gap_ms: Sequence[float] = (30.0, 90.0),
        glide: float = 0.15,
        talker_shift: float = 0.07,
        snr_db: Sequence[float] = (0.0, 20.0),
        level_db: Sequence[float] = (-35.0, -15.0),
        segment_seconds: float = 1.4,
        val_size: int = 256,
        seed: int = 0,
    ):
        for key, pair in (
            ("tokens", tokens),
            ("token_ms", token_ms),
            ("gap_ms", gap_ms),
            ("snr_db", snr_db),
            ("level_db", level_db),
        ):
            span(f"data.{key}", pair)
        if vocab < 1 or tokens[0] < 1:
            raise ValueError(f"data.vocab and data.tokens[0] must be >= 1, got {vocab} and {tokens[0]}")
        self.sample_rate, self.vocab = sample_rate, vocab
        self.n_tokens, self.token_ms, self.gap_ms = tuple(tokens), tuple(token_ms), tuple(gap_ms)
        self.glide, self.talker_shift = glide, talker_shift
        self.snr_db, self.level_db = tuple(snr_db), tuple(level_db)
        self.length = int(round(segment_seconds * sample_rate))
        self.max_tokens = tokens[1]
        self.table = token_table(vocab)
        self.val_size, self.seed = val_size, seed
        self._bank: list[np.ndarray] | None = None
        longest = (tokens[1] * token_ms[1] + (tokens[1] + 1) * gap_ms[1]) / 1000
        if longest > segment_seconds:
            raise ValueError(
                f"data.segment_seconds={segment_seconds} cannot hold the longest utterance "
                f"({tokens[1]} tokens of {token_ms[1]} ms and their gaps: {longest:.2f} s)"
            )

    def _noise_bank(self) -> list[np.ndarray]:
        """White and pink noise clips one segment long, rendered once (an FFT per utterance
        would cost as much as the rest of the rendering); each utterance crops one."""
        if self._bank is None:
            rng = np.random.default_rng([self.seed, 2, 0])
            n = self.length
            white = rng.standard_normal((8, n))
            pink = np.fft.irfft(np.fft.rfft(rng.standard_normal((8, n))) / np.sqrt(np.arange(n // 2 + 1) + 1.0), n)
            self._bank = [*white, *pink]
        return self._bank

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, int, list[int]]:
        """One utterance: (padded audio, its length in samples, its tokens)."""
        sr, ms = self.sample_rate, self.sample_rate / 1000
        labels = rng.integers(1, self.vocab + 1, int(rng.integers(self.n_tokens[0], self.n_tokens[1] + 1))).tolist()
        talker = 1 + rng.uniform(-self.talker_shift, self.talker_shift)
        pieces = [np.zeros(int(rng.uniform(*self.gap_ms) * ms))]
        for k in labels:
            low, high, direction = self.table[k - 1]
            n = int(rng.uniform(*self.token_ms) * ms)
            t = np.arange(n) / sr
            # a linear glide of `glide` over the token: phase is the integral of frequency
            sweep = 1 + direction * self.glide * (t / t[-1] - 0.5)
            phase = 2 * np.pi * np.cumsum(sweep) / sr
            gains = 10 ** (rng.uniform(-6, 0, 2) / 20)
            tone = gains[0] * np.sin(low * talker * phase + rng.uniform(0, 2 * np.pi))
            tone += gains[1] * np.sin(high * talker * phase + rng.uniform(0, 2 * np.pi))
            ramp = min(n // 2, int(10 * ms))  # 10 ms raised-cosine attack and decay: no clicks
            envelope = np.ones(n)
            envelope[:ramp] = envelope[n - ramp :][::-1] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
            pieces += [tone * envelope * 10 ** (rng.uniform(-6, 0) / 20), np.zeros(int(rng.uniform(*self.gap_ms) * ms))]
        clean = np.concatenate(pieces)
        n = len(clean)
        bank = self._noise_bank()[int(rng.integers(len(self._bank)))]
        start = int(rng.integers(len(bank) - n + 1))
        noise = bank[start : start + n].copy()
        power = np.mean(clean**2) + 1e-12
        noise *= np.sqrt(power / (np.mean(noise**2) + 1e-12) * 10 ** (-rng.uniform(*self.snr_db) / 10))
        audio = clean + noise
        audio *= 10 ** (rng.uniform(*self.level_db) / 20) / np.sqrt(np.mean(audio**2))
        out = np.zeros(self.length, np.float32)
        out[:n] = audio
        return out, n, labels

    def example(self, split: int, index: int) -> dict[str, torch.Tensor]:
        audio, n, labels = self.render(np.random.default_rng([self.seed, split, int(index)]))
        tokens = torch.zeros(self.max_tokens, dtype=torch.long)  # padding is never read
        tokens[: len(labels)] = torch.tensor(labels)
        return {
            "audio": torch.from_numpy(audio),
            "audio_lengths": torch.tensor(n),
            "tokens": tokens,
            "token_lengths": torch.tensor(len(labels)),
        }

    def examples(self, split: int, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        return [self.example(split, i) for i in indices]

    def train(self) -> Keyed:
        return Keyed.draws(functools.partial(self.examples, TRAIN))

    def valid(self) -> Keyed:
        return Keyed.fixed_set(functools.partial(self.examples, VALID), self.val_size, memo=True)
