"""Noise families for synthetic mixtures. Each returns `n` samples of unit RMS (float64).

The families cover what speech enhancement meets in practice: broadband hiss (white),
coloured noise from 1/f to 1/f^2 and arbitrary smooth spectra (fans, cars, rooms), mains
hum with harmonics, babble made of other synthetic voices, impulsive clicks, and slowly
modulated (non-stationary) versions of them, optionally reverberant.
"""

from __future__ import annotations

import numpy as np

from trainer.data import voice


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def white(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return rng.standard_normal(n)


def coloured(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """1/f^alpha noise, alpha in [0.5, 2] (pink = 1, brown = 2)."""
    alpha = rng.uniform(0.5, 2.0)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= np.maximum(f, 20.0) ** (-alpha / 2)
    return np.fft.irfft(spec, n)


def shaped(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Stationary noise with a random smooth spectral envelope (fan, engine, street)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    knots = np.geomspace(50, sr / 2, 12)
    gains_db = np.cumsum(rng.normal(-2.0, 6.0, len(knots)))  # a random walk, tilted down
    spec *= 10 ** (np.interp(np.log(np.maximum(f, 50)), np.log(knots), gains_db) / 20)
    return np.fft.irfft(spec, n)


def hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and harmonics with random levels, a little buzz and hiss."""
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
    k = np.arange(1, int(min(40, sr / 2 / f0)))
    amps = rng.uniform(0.2, 1.0, len(k)) * k ** -rng.uniform(0.3, 1.5)
    amps[1::2] *= rng.uniform(0.3, 2.0)  # odd/even balance differs between devices
    # One period as a wavetable, read along the phase: n lookups instead of n*k sines.
    table_len = 2048
    theta = 2 * np.pi * np.arange(table_len + 1) / table_len
    table = np.sin(np.outer(theta, k) + rng.uniform(0, 2 * np.pi, len(k))) @ amps
    phase = (f0 * np.arange(n) / sr) % 1.0 * table_len
    x = np.interp(phase, np.arange(table_len + 1), table)
    return _unit(x) + rng.uniform(0.0, 0.1) * rng.standard_normal(n)


def babble(rng: np.random.Generator, n: int, sr: int, talker=None) -> np.ndarray:
    """A crowd in a room: 6 to 16 other synthetic talkers at random levels, reverberant.

    With fewer talkers it is a competing-speaker problem rather than noise; real cafeteria
    babble recordings hold many talkers and the room's reverberation. `talker(rng, n)`
    supplies one voice (a dataset passes its own corpus, which costs nothing to reuse);
    by default a new voice is rendered.
    """
    talker = talker or (lambda r, m: voice.render(r, m, sr))
    x = sum(rng.uniform(0.3, 1.0) * talker(rng, n) for _ in range(int(rng.integers(6, 17))))
    return reverberate(rng, x, sr)


def clicks(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Impulsive noise: decaying clicks at a random rate over a faint hiss."""
    x = rng.uniform(0.0, 0.05) * rng.standard_normal(n)
    rate = rng.uniform(2, 30)  # per second
    count = rng.poisson(rate * n / sr) + 1
    decay = np.exp(-np.arange(int(0.004 * sr)) / (rng.uniform(0.0003, 0.0015) * sr))
    for pos, amp in zip(rng.integers(0, n, count), rng.uniform(0.3, 1.0, count) * rng.choice([-1, 1], count)):
        seg = decay[: n - pos] * rng.standard_normal(min(len(decay), n - pos))
        x[pos : pos + len(seg)] += amp * seg
    return x


FAMILIES = {
    "white": white,
    "coloured": coloured,
    "shaped": shaped,
    "hum": hum,
    "babble": babble,
    "clicks": clicks,
}


def modulate(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """Slow level changes (passing traffic, a door): makes stationary noise non-stationary."""
    n = len(x)
    knots = max(2, int(n / sr * rng.uniform(1, 6)))
    env_db = rng.normal(0, rng.uniform(2, 8), knots)
    return x * 10 ** (np.interp(np.arange(n), np.linspace(0, n, knots), env_db) / 20)


def reverberate(rng: np.random.Generator, x: np.ndarray, sr: int) -> np.ndarray:
    """Convolve with a synthetic exponentially decaying room response (RT60 0.2 to 1 s)."""
    rt60 = rng.uniform(0.2, 1.0)
    m = int(rt60 * sr)
    rir = rng.standard_normal(m) * np.exp(-6.9 * np.arange(m) / m)
    rir[0] = 1.0 + abs(rir[0])
    n_fft = int(2 ** np.ceil(np.log2(len(x) + m)))
    return np.fft.irfft(np.fft.rfft(x, n_fft) * np.fft.rfft(rir, n_fft), n_fft)[: len(x)]


def pick_families(rng: np.random.Generator, families: list[str]) -> list[str]:
    """The one or two families of a noise clip: `make_noise`'s first draws."""
    k = 1 if rng.random() < 0.7 or len(families) < 2 else 2
    return list(rng.choice(families, size=k, replace=False))


def make_noise(
    rng: np.random.Generator, n: int, sr: int, families: list[str], p_modulate: float, p_reverb: float, talker=None
):
    """One or two families mixed, optionally modulated and reverberant, unit RMS.

    `talker(rng, n)`, if given, supplies the voices of babble.
    """
    names = pick_families(rng, families)
    parts = []
    for name in names:
        x = babble(rng, n, sr, talker) if name == "babble" else FAMILIES[name](rng, n, sr)
        parts.append(rng.uniform(0.3, 1.0) * _unit(x))
    x = sum(parts)
    if rng.random() < p_modulate:
        x = modulate(rng, x, sr)
    if rng.random() < p_reverb:
        x = reverberate(rng, x, sr)
    return _unit(x), list(names)
