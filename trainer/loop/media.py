"""Audio and spectrogram images for TensorBoard: what a researcher listens to and looks at.

Each validation example gets one colour scale, taken from its input and target (which do
not change), so the output's spectrogram is comparable across epochs and with the other
two. Figures are drawn with matplotlib's Agg backend (no display needed), imported on
first use only.
"""

from __future__ import annotations

import math

import torch

DYNAMIC_RANGE_DB = 80.0


def _n_fft(sample_rate: int) -> int:
    """A ~32 ms window, a power of two: 512 at 16 kHz, 2048 at 48 kHz."""
    return 2 ** max(6, round(math.log2(0.032 * sample_rate)))


def spectrogram_db(x: torch.Tensor, sample_rate: int, kind: str = "stft", n_mels: int = 80) -> torch.Tensor:
    """(freq, frames) power in dB: a log-magnitude STFT, or a log-mel spectrogram."""
    n_fft = _n_fft(sample_rate)
    x = x.float().reshape(-1)
    if kind == "mel":
        import torchaudio.transforms as T

        power = T.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)(x)
    elif kind == "stft":
        spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
        power = spec.abs().pow(2)
    else:
        raise ValueError(f"trainer.validation.spectrogram must be 'stft' or 'mel', got {kind!r}")
    return 10 * torch.log10(power + 1e-12)


def colour_scale(example: dict[str, torch.Tensor], sample_rate: int, kind: str) -> tuple[float, float]:
    top = max(spectrogram_db(example[k], sample_rate, kind).max().item() for k in ("input", "target") if k in example)
    return top - DYNAMIC_RANGE_DB, top


def figure(spec_db: torch.Tensor, sample_rate: int, kind: str, scale: tuple[float, float], title: str):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    frames = spec_db.shape[-1]
    seconds = frames * (_n_fft(sample_rate) // 4) / sample_rate
    top = sample_rate / 2000 if kind == "stft" else spec_db.shape[0]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    image = ax.imshow(
        spec_db.numpy(),
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=scale[0],
        vmax=scale[1],
        extent=(0, seconds, 0, top),
        interpolation="nearest",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)" if kind == "stft" else "mel bin")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="dB", fraction=0.05, pad=0.02)
    # fixed margins for this one layout: tight_layout() measured every tick label and cost
    # more than drawing the figure (~0.15 s each, several figures per validation)
    fig.subplots_adjust(left=0.1, right=0.9, bottom=0.16, top=0.9)
    return fig


def log_examples(writer, examples: list[dict], step: int, sample_rate: int, kind: str, first: bool) -> None:
    """Each example's output audio and spectrogram, or its decoded text; the input and target
    too when `first` (they are the same every epoch). Tags: `audio/<i>/<role>`,
    `spectrogram/<i>/<role>`, `text/<i>`."""
    for i, example in enumerate(examples):
        if "text" in example:
            writer.add_text(f"text/{i}", example["text"], step)
        roles = [r for r in ("input", "output", "target") if r in example and (first or r == "output")]
        if not roles:
            continue
        scale = colour_scale(example, sample_rate, kind)
        for role in roles:
            signal = example[role].float()
            # add_audio clips to [-1, 1]; a model output beyond it is visible in clip_frac
            writer.add_audio(f"audio/{i}/{role}", signal.clamp(-1, 1).reshape(1, -1), step, sample_rate=sample_rate)
            spec = spectrogram_db(signal, sample_rate, kind)
            writer.add_figure(
                f"spectrogram/{i}/{role}", figure(spec, sample_rate, kind, scale, f"example {i}: {role}"), step
            )
