"""Noise families for synthetic mixtures. Each returns `n` samples of unit RMS (float64).

The families cover what speech enhancement meets in practice: broadband hiss (white),
coloured noise from 1/f to 1/f^2 and arbitrary smooth spectra (fans, cars, rooms), mains
hum with harmonics, babble made of other synthetic voices, impulsive clicks, and slowly
modulated (non-stationary) versions of them, optionally reverberant. Three more are opt-in
(`data.families`), for what recordings hold and the default list does not: a `crowd` of
talkers each at its own distance in one room, one or two nearby competing `talker`s, and
procedural `music` (pitched notes with harmonics over a bass line and percussion).
"""

from __future__ import annotations

import numpy as np

from trainer.data import voice
from trainer.data.augment import room_impulse_response


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


def _new_voices(sr: int):
    """The talker of the voiced families when a dataset passes none: a new voice per call."""
    return lambda r, m: voice.render(r, m, sr)


def babble(rng: np.random.Generator, n: int, sr: int, talker=None) -> np.ndarray:
    """A crowd in a room: 6 to 16 other synthetic talkers at random levels, reverberant.

    With fewer talkers it is a competing-speaker problem rather than noise; real cafeteria
    babble recordings hold many talkers and the room's reverberation. `talker(rng, n)`
    supplies one voice (a dataset passes its own corpus, which costs nothing to reuse);
    by default a new voice is rendered.
    """
    talker = talker or _new_voices(sr)
    x = sum(rng.uniform(0.3, 1.0) * talker(rng, n) for _ in range(int(rng.integers(6, 17))))
    return reverberate(rng, x, sr)


def crowd(rng: np.random.Generator, n: int, sr: int, talker=None) -> np.ndarray:
    """A crowd in one room, each of 8 to 20 talkers at its own distance: one reverberation
    time for the room, a direct-to-reverberant ratio per talker from -10 dB (across the room)
    to +5 dB (the next table), so near voices stay intelligible and far ones smear into the
    diffuse murmur, as in a cafeteria recording."""
    talker = talker or _new_voices(sr)
    rt60 = rng.uniform(0.3, 1.0)
    x = np.zeros(n)
    for _ in range(int(rng.integers(8, 21))):
        rir = room_impulse_response(rt60, sr, rng, rng.uniform(-10.0, 5.0)).double().numpy()
        x += rng.uniform(0.3, 1.0) * _convolve(talker(rng, n), rir)
    return x


def competing(rng: np.random.Generator, n: int, sr: int, talker=None) -> np.ndarray:
    """One or two other talkers close by (a conversation at the next desk, a TV): speech the
    model must not keep, mildly reverberant half of the time."""
    talker = talker or _new_voices(sr)
    x = sum(rng.uniform(0.5, 1.0) * talker(rng, n) for _ in range(int(rng.integers(1, 3))))
    if rng.random() < 0.5:
        x = _convolve(x, room_impulse_response(rng.uniform(0.2, 0.6), sr, rng, 3.0).double().numpy())
    return x


def music(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Procedural music: a tempo and a scale; a melody and a bass line of notes (harmonic
    partials with their own decay), chords on some beats, and percussion (a pitch-swept
    kick, noise-burst hats) on others: tonal, rhythmic and wideband at once."""
    t_beat = 60.0 / rng.uniform(70, 160)
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    scale = np.array([0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10])
    x = np.zeros(n)
    beat = int(t_beat * sr)

    def note(freq: float, length: int, partials: int, decay: float) -> np.ndarray:
        t = np.arange(length) / sr
        k = np.arange(1, partials + 1)
        k = k[k * freq < sr / 2]
        tone = np.sin(2 * np.pi * freq * np.outer(t, k) + rng.uniform(0, 2 * np.pi, len(k))) @ (1.0 / k)
        return tone * np.exp(-t / decay) * np.minimum(1.0, t / 0.005)  # 5 ms attack

    def place(sound: np.ndarray, start: int, gain: float) -> None:
        end = min(n, start + len(sound))
        x[start:end] += gain * sound[: end - start]

    for i, start in enumerate(range(0, n, beat)):
        degree = scale[rng.integers(0, len(scale))]
        place(note(root * 2 ** (degree / 12 + rng.integers(1, 3)), beat, 8, rng.uniform(0.1, 0.5)), start, 0.6)
        if i % 2 == 0:
            place(note(root / 2 * 2 ** (degree / 12), 2 * beat, 4, 0.6), start, 0.8)
        if rng.random() < 0.3:  # a chord: the degree's third and fifth
            for step in (2, 4):
                pitch = scale[(int(np.flatnonzero(scale == degree)[0]) + step) % len(scale)]
                place(note(root * 2 ** (pitch / 12 + 1), beat, 6, 0.8), start, 0.3)
        if i % 2 == 0:  # kick: a sine swept down from 120 to 50 Hz
            t = np.arange(int(0.15 * sr)) / sr
            place(np.sin(2 * np.pi * (50 * t + 70 * 0.03 * (1 - np.exp(-t / 0.03)))) * np.exp(-t / 0.05), start, 1.0)
        else:  # hat: a short burst of high-passed noise
            burst = np.diff(rng.standard_normal(int(0.04 * sr) + 1)) * np.exp(-np.arange(int(0.04 * sr)) / (0.008 * sr))
            place(burst, start, 0.3)
    return x


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
    "crowd": crowd,
    "talker": competing,
    "music": music,
}
DEFAULT = ("white", "coloured", "shaped", "hum", "babble", "clicks")  # conf/data/synthetic.yaml's
TALKING = {"babble", "crowd", "talker"}  # the families made of voices (a dataset passes its own)


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
    return _convolve(x, rir)


def _convolve(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`x` through `rir`, cut to the length of `x` (by FFT: a second-long response)."""
    n_fft = int(2 ** np.ceil(np.log2(len(x) + len(rir))))
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
        x = FAMILIES[name](rng, n, sr, talker) if name in TALKING else FAMILIES[name](rng, n, sr)
        parts.append(rng.uniform(0.3, 1.0) * _unit(x))
    x = sum(parts)
    if rng.random() < p_modulate:
        x = modulate(rng, x, sr)
    if rng.random() < p_reverb:
        x = reverberate(rng, x, sr)
    return _unit(x), list(names)
