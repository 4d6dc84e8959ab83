"""Procedural speech-like voices: a source-filter synthesiser small enough to ship in the code.

A glottal pulse train (Rosenberg shape, jitter, shimmer, breathiness) follows a prosodic
pitch contour; syllables built from vowels and consonants (fricatives, plosives, nasals,
approximants) set formant targets that are smoothed into coarticulated trajectories; the
time-varying vocal-tract filter is applied frame by frame in the STFT domain, which costs a
few FFTs per utterance instead of a per-sample IIR loop in Python.

Everything is drawn from the `numpy.random.Generator` passed in, so an utterance is a pure
function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Adult male F1-F3 (Hz) of English vowels, after Hillenbrand et al. (1995); F4, F5 fixed below.
VOWELS = np.array(
    [
        [342, 2322, 3000],  # i
        [427, 2034, 2684],  # ɪ
        [476, 2089, 2691],  # e
        [580, 1799, 2605],  # ɛ
        [588, 1952, 2601],  # æ
        [768, 1333, 2522],  # ɑ
        [652, 997, 2538],  # ɔ
        [497, 910, 2459],  # o
        [469, 1122, 2434],  # ʊ
        [378, 997, 2343],  # u
        [623, 1200, 2550],  # ʌ
        [474, 1379, 1710],  # ɝ
    ],
    dtype=np.float64,
)
# F4 and F5 stand in for the higher poles: without them the spectrum above 3 kHz is far
# darker than real speech (checked against long-term average spectra).
F_HIGH = (3500.0, 4500.0)
BANDWIDTHS = np.array([80.0, 100.0, 150.0, 250.0, 300.0])
# F2 loci of consonants by place of articulation (labial, alveolar, velar).
PLACE_F2 = np.array([900.0, 1700.0, 2100.0])
# Fricative noise bands: (centre Hz, bandwidth Hz, level), for /s/, /ʃ/, /f θ/ and /x/.
FRICATIVES = np.array([[6500, 3500, 0.6], [3200, 1800, 0.7], [5000, 7000, 0.2], [1800, 1500, 0.35]])

CONSONANT_KINDS = ("fricative", "plosive", "nasal", "approximant")
CONSONANT_P = np.array([0.32, 0.33, 0.17, 0.18])


@dataclass
class Speaker:
    f0: float  # median pitch, Hz
    formant_scale: float  # vocal-tract length factor (children and women > 1)
    jitter: float  # relative period perturbation
    shimmer: float  # relative period amplitude perturbation
    breathiness: float  # aspiration noise level relative to voicing
    open_quotient: float
    closing: float  # share of the open phase spent closing: short = abrupt = brighter voice
    formant_gains: np.ndarray  # linear level of each formant in the parallel bank
    tilt_db: float  # extra spectral tilt per octave above 1 kHz (negative: darker)
    low_boost: float  # low-shelf gain below ~300 Hz (linear, added to 1)
    rate: float  # speaking-rate factor (>1: faster)
    kind: str = ""  # male, female or child: what the pitch and tract were drawn for


def random_speaker(rng: np.random.Generator) -> Speaker:
    kind = rng.choice(3, p=[0.45, 0.45, 0.10])  # male, female, child
    f0 = [rng.uniform(80, 160), rng.uniform(160, 260), rng.uniform(230, 330)][kind]
    scale = [rng.uniform(0.92, 1.08), rng.uniform(1.08, 1.22), rng.uniform(1.2, 1.35)][kind]
    return Speaker(
        f0=f0,
        formant_scale=scale,
        jitter=rng.uniform(0.003, 0.02),
        shimmer=rng.uniform(0.02, 0.10),
        breathiness=rng.uniform(0.0, 0.25),
        open_quotient=rng.uniform(0.45, 0.75),
        closing=rng.uniform(0.15, 0.45),
        formant_gains=10 ** ((np.array([0.0, -4.0, -9.0, -14.0, -18.0]) + rng.normal(0, 3, 5)) / 20),
        tilt_db=rng.uniform(-3.0, 1.0),
        low_boost=rng.uniform(0.5, 3.0),
        rate=rng.uniform(0.8, 1.3),
        kind=("male", "female", "child")[kind],
    )


@dataclass
class Tracks:
    """Per-frame control tracks (frame hop = `hop` samples)."""

    f0: np.ndarray  # (F,) Hz
    voice: np.ndarray  # (F,) voicing amplitude
    aspiration: np.ndarray  # (F,) noise through the vocal tract (h, aspiration)
    frication: np.ndarray  # (F,) noise through the fricative band-pass
    fric_band: np.ndarray  # (F, 3) centre, bandwidth, unused level
    formants: np.ndarray  # (F, 5) Hz
    nasal: np.ndarray  # (F,) 0..1 nasal murmur weight


def _plan(rng: np.random.Generator, spk: Speaker, n_frames: int, frame_rate: float) -> Tracks:
    """Lay out syllables on the frame grid and write their targets into the tracks."""
    F = n_frames
    f0_rel = np.zeros(F)
    voice = np.zeros(F)
    asp = np.zeros(F)
    fric = np.zeros(F)
    band = np.tile(FRICATIVES[0], (F, 1))
    formants = np.tile(np.append(VOWELS[10], F_HIGH), (F, 1))  # neutral schwa-like rest
    nasal = np.zeros(F)

    def frames(ms: float) -> int:
        return max(1, int(round(ms / 1000.0 * frame_rate / spk.rate)))

    def span(start: int, n: int) -> slice:
        return slice(min(start, F), min(F, start + n))

    t = int(rng.integers(0, frames(150) + 1))
    syll_in_word = 0
    while t < F:
        stressed = rng.random() < 0.4
        vowel = VOWELS[rng.integers(len(VOWELS))]
        accent = rng.uniform(0.08, 0.3) if stressed else rng.uniform(-0.05, 0.08)
        for part in ("onset", "vowel", "coda"):
            if part == "onset" and rng.random() > 0.75 or part == "coda" and rng.random() > 0.35:
                continue
            if part == "vowel":
                n = frames(rng.uniform(110, 260) if stressed else rng.uniform(60, 150))
                s = span(t, n)
                voice[s] = rng.uniform(0.7, 1.0) * (1.0 if stressed else 0.75)
                formants[s, :3] = vowel * rng.uniform(0.95, 1.05, 3)
                # an accent is a pitch bump across the nucleus
                f0_rel[s] = accent * np.sin(np.linspace(0.2, np.pi - 0.2, s.stop - s.start))
                t += n
                continue
            kind = CONSONANT_KINDS[rng.choice(4, p=CONSONANT_P)]
            place = int(rng.integers(3))
            voiced = rng.random() < 0.45
            f2 = PLACE_F2[place]
            if kind == "fricative":
                n = frames(rng.uniform(70, 160))
                s = span(t, n)
                which = int(rng.integers(len(FRICATIVES)))
                fric[s] = FRICATIVES[which, 2] * rng.uniform(0.6, 1.2)
                band[s] = FRICATIVES[which]
                voice[s] = 0.25 if voiced else 0.0
                formants[s, :2] = (300, f2)
            elif kind == "plosive":
                closure = frames(rng.uniform(40, 90))
                burst = frames(rng.uniform(8, 20))
                aspir = 0 if voiced else frames(rng.uniform(10, 60))
                s_cl = span(t, closure)
                voice[s_cl] = 0.12 if voiced else 0.0  # voice bar under a voiced closure
                formants[s_cl, :2] = (250, f2)
                s_b = span(t + closure, burst)
                fric[s_b] = rng.uniform(0.4, 1.0)
                band[s_b] = (1200 + 1800 * place, 4000, 0)
                s_a = span(s_b.stop, aspir)
                asp[s_a] = rng.uniform(0.15, 0.4)
                formants[s_b.start : s_a.stop, :2] = (500, f2)
                n = closure + burst + aspir
            elif kind == "nasal":
                n = frames(rng.uniform(50, 110))
                s = span(t, n)
                voice[s] = 0.6
                nasal[s] = 1.0
                formants[s, :3] = (280, f2 * 0.9, 2600)
            else:  # approximant: a short glide with vowel-like formants
                n = frames(rng.uniform(40, 90))
                s = span(t, n)
                voice[s] = 0.7
                formants[s, :3] = (rng.uniform(300, 450), rng.uniform(700, 2200), rng.uniform(1600, 2700))
            t += n
        syll_in_word += 1
        if syll_in_word >= rng.integers(1, 4):  # word boundary: sometimes a pause
            syll_in_word = 0
            if rng.random() < 0.35:
                t += frames(rng.uniform(60, 350))

    # Coarticulation: articulators move smoothly between targets (~40 ms).
    formants = _smooth(formants, max(1, int(0.04 * frame_rate)))
    voice = _smooth(voice, max(1, int(0.015 * frame_rate)))
    asp = _smooth(asp, max(1, int(0.01 * frame_rate)))
    nasal = _smooth(nasal, max(1, int(0.02 * frame_rate)))

    # Prosody: declination over the phrase, accents, slow drift, optional final rise.
    x = np.linspace(0.0, 1.0, F)
    drift = _smooth(rng.normal(0, 0.06, F), max(1, int(0.2 * frame_rate)))
    rise = rng.uniform(0.1, 0.3) * np.clip((x - 0.85) / 0.15, 0, 1) if rng.random() < 0.2 else 0.0
    contour = -rng.uniform(0.05, 0.25) * x + _smooth(f0_rel, max(1, int(0.05 * frame_rate))) + drift + rise
    f0 = spk.f0 * np.exp(contour)
    formants = formants * spk.formant_scale
    formants[:, 3] = np.maximum(formants[:, 3], formants[:, 2] + 300)
    formants[:, 4] = np.maximum(formants[:, 4], formants[:, 3] + 500)
    return Tracks(f0, voice, asp, fric, band, formants, nasal)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 with edge padding (keeps the length)."""
    if width <= 1:
        return x
    kernel = np.ones(width) / width
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="edge")
    if x.ndim == 1:
        return np.convolve(xp, kernel, mode="valid")
    return np.stack([np.convolve(xp[:, i], kernel, mode="valid") for i in range(x.shape[1])], axis=1)


def _glottal_source(rng: np.random.Generator, spk: Speaker, f0_samples: np.ndarray, sr: int):
    """Differentiated Rosenberg pulses along a phase track, with jitter and shimmer.

    Returns the source and the open-phase envelope (to modulate aspiration noise).
    """
    n = len(f0_samples)
    # jitter: a slowly varying random perturbation of the instantaneous frequency
    jit = np.interp(np.arange(n), np.linspace(0, n, 64), rng.normal(0, spk.jitter, 64))
    phase = np.cumsum(f0_samples * (1.0 + jit) / sr)
    frac = phase % 1.0
    oq = spk.open_quotient
    tp, tn = (1 - spk.closing) * oq, spk.closing * oq
    flow = np.where(
        frac < tp,
        0.5 * (1 - np.cos(np.pi * frac / tp)),
        np.where(frac < tp + tn, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0),
    )
    period = phase.astype(np.int64)
    shimmer = 1.0 + spk.shimmer * rng.standard_normal(int(period[-1]) + 2)
    flow = flow * shimmer[period]
    src = np.diff(flow, prepend=0.0) * (sr / np.maximum(f0_samples, 1.0))  # pitch-independent level
    return src, flow


def _resonances(freqs: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """|H(f)| of a parallel formant bank (as in Klatt's parallel branch), per frame.

    Each resonance peaks at 1 at its centre, times its own gain. A cascade of five
    DC-normalised resonators would fall by 60 dB/octave above F5 and sound muffled; the
    parallel form keeps the upper formants' levels explicit. Works in kHz and float32.
    """
    f2 = (freqs.astype(np.float32) / 1000.0)[None, :] ** 2
    fk = (formants.astype(np.float32) / 1000.0) ** 2
    bw = (bandwidths.astype(np.float32) / 1000.0)[None, :]
    f = np.sqrt(f2)
    out = np.zeros((len(formants), len(freqs)), np.float32)
    for k in range(formants.shape[1]):
        q = (f2 - fk[:, k : k + 1]) / (bw[:, k : k + 1] * f + 1e-6)
        out += gains[k] / np.sqrt(1.0 + q * q)
    return out


def _stft(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    return np.fft.rfft(frames * window, axis=1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, window: np.ndarray, length: int) -> np.ndarray:
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * window
    n_frames = frames.shape[0]
    out = np.zeros(hop * (n_frames - 1) + n_fft)
    norm = np.zeros_like(out)
    # overlap-add, one strided add per hop phase: n_fft/hop adds instead of n_frames
    ratio = n_fft // hop
    for r in range(ratio):
        seg = frames[:, r * hop : (r + 1) * hop]
        out[r * hop : r * hop + n_frames * hop] += seg.reshape(-1)
        norm[r * hop : r * hop + n_frames * hop] += np.tile(window[r * hop : (r + 1) * hop] ** 2, n_frames)
    return (out / np.maximum(norm, 1e-8))[:length]


def fft_size(sr: int) -> int:
    """~32 ms analysis window, a power of two."""
    return int(2 ** np.ceil(np.log2(0.032 * sr)))


def render(rng: np.random.Generator, n_samples: int, sr: int, speaker: Speaker | None = None) -> np.ndarray:
    """One utterance of `n_samples` at `sr`, unit RMS over its active part, float64."""
    return utterance(rng, n_samples, sr, speaker)[0]


def utterance(rng: np.random.Generator, n_samples: int, sr: int, speaker: Speaker | None = None):
    """`render`, also returning the control tracks (frame hop `fft_size(sr) // 4`) and the
    speaker, for inspection and for the statistics tests."""
    spk = speaker or random_speaker(rng)
    n_fft = fft_size(sr)
    hop = n_fft // 4
    n_frames = int(np.ceil(n_samples / hop)) + 1
    total = hop * (n_frames - 1) + n_fft
    tr = _plan(rng, spk, n_frames + n_fft // hop, sr / hop)

    # Frame tracks -> sample tracks; frame i is centred at i*hop + n_fft/2 in the padded signal.
    centres = np.arange(len(tr.f0)) * hop
    t = np.arange(total) - n_fft // 2
    f0_s = np.interp(t, centres, tr.f0)
    voice_s = np.interp(t, centres, tr.voice)
    asp_s = np.interp(t, centres, tr.aspiration)
    fric_s = np.interp(t, centres, tr.frication)

    glottal, flow = _glottal_source(rng, spk, f0_s, sr)
    white = rng.standard_normal((2, total))
    breath = spk.breathiness * (0.3 + flow) * white[0]
    tract_src = glottal * voice_s + (breath * voice_s + asp_s * white[0])
    fric_src = fric_s * white[1]

    window = np.hanning(n_fft + 1)[:n_fft]
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fr = slice(0, (total - n_fft) // hop + 1)
    formants = np.minimum(tr.formants[fr], 0.45 * sr)
    tract = _resonances(freqs, formants, BANDWIDTHS * spk.formant_scale, spk.formant_gains)
    # nasal murmur: damp everything above ~500 Hz
    tract *= 1.0 - 0.7 * tr.nasal[fr, None] * (freqs[None, :] > 500)
    tilt = 10 ** (spk.tilt_db / 20 * np.log2(np.maximum(freqs, 1000.0) / 1000.0))
    tilt *= 1.0 + spk.low_boost / (1.0 + (freqs / 300.0) ** 2)  # a strong first harmonic, as in real voices
    centre = np.minimum(tr.fric_band[fr, 0:1], 0.42 * sr)
    fric_filter = np.exp(-0.5 * ((freqs[None, :] - centre) / tr.fric_band[fr, 1:2]) ** 2)

    spec = _stft(tract_src, n_fft, hop, window) * tract * tilt + _stft(fric_src, n_fft, hop, window) * fric_filter
    y = _istft(spec, n_fft, hop, window, total)[n_fft // 2 : n_fft // 2 + n_samples]

    # Loudness varies across an utterance too (phrase-level swell).
    y *= np.exp(_smooth(rng.normal(0, 0.25, len(y) // hop + 2), 8)[np.arange(len(y)) // hop])
    active = np.abs(y) > 0.05 * np.abs(y).max() if np.any(y) else np.ones_like(y, dtype=bool)
    return y / (np.sqrt(np.mean(y[active] ** 2)) + 1e-12), tr, spk
