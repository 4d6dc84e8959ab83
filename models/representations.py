"""Input representations ("data models"): how a waveform becomes per-frame features for a
network, and how the network's per-frame output becomes a waveform again.

Every model that works on frames takes one of these instead of writing its own STFT:

| domain      | features per frame                  | the network predicts                                        |
|-------------|-------------------------------------|-------------------------------------------------------------|
| `waveform`  | the raw samples of a windowed frame | a correction to the frame (overlap-add)                     |
| `magnitude` | log-magnitude STFT                  | a mask: `gain` per bin (noisy phase) or `complex` ratio (*) |
| `complex`   | power-law compressed real/imag STFT | the same choice of mask                                     |
| log-mel     | log-mel filterbank (`LogMel`)       | nothing: features only (recognition front end)              |

(*) with `residual`: the `complex` ratio plus an additive spectrum.

The transforms are torchaudio's (`Spectrogram`, `InverseSpectrogram`, `MelSpectrogram`)
and `torch.nn.functional.fold` for the overlap-add. They run in float32 even under autocast:
half-precision FFTs lose the low-level bins that a mask model has to attenuate.
"""

from __future__ import annotations

from typing import Any

import torch
import torchaudio.transforms as T
from torch import nn
from torch.nn import functional as F


def _no_autocast(x: torch.Tensor):
    return torch.autocast(x.device.type, enabled=False)


class Representation(nn.Module):
    """`analyse(x) -> (features (B, N, features), context)`;
    `synthesise(y (B, N, outputs), context, length) -> (B, length)`."""

    features: int
    outputs: int

    def analyse(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def synthesise(self, y: torch.Tensor, context: Any, length: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is a feature extractor only: it has no synthesis")

    def exportable(self) -> None:
        """Switch to operations every export format has (see STFTMask)."""


class _STFT(Representation):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        if not 0 < hop <= n_fft:
            raise ValueError(f"model.hop must be in (0, n_fft={n_fft}], got {hop}")
        self.bins = n_fft // 2 + 1
        self.stft = T.Spectrogram(n_fft, hop_length=hop, power=None)
        self.istft = T.InverseSpectrogram(n_fft, hop_length=hop)

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(B, time) -> (B, N frames, bins) complex, frame-major (a view: no copy)."""
        with _no_autocast(x):
            return self.stft(x.float()).transpose(1, 2)

    def waveform(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(B, N, bins) complex -> (B, length)."""
        with _no_autocast(spec):
            return self.istft(spec.transpose(1, 2), length)


class STFTMask(_STFT):
    """STFT frames in, a mask on the noisy STFT out.

    `features`: "magnitude" (log(1 + |X|) per bin) or "complex" (real and imaginary parts
    after power-law compression, |X|^c with the phase kept, so quiet bins stay visible and
    the network sees the phase).
    `mask`: "gain" (a sigmoid gain per bin, the noisy phase kept) or "complex" (a bounded
    complex ratio mask, |M| < 1 via tanh as in DCCRN, which can also correct the phase).
    `residual=True` (complex mask) adds a predicted spectrum to the masked one, so the model
    can create energy where the input has none (bandwidth extension: a mask cannot).
    """

    def __init__(
        self,
        n_fft: int = 512,
        hop: int = 128,
        features: str = "magnitude",
        mask: str = "complex",
        residual: bool = False,
        compress: float = 0.3,
    ):
        super().__init__(n_fft, hop)
        if features not in ("magnitude", "complex"):
            raise ValueError(f"model.domain must be 'waveform', 'magnitude' or 'complex', got {features!r}")
        if mask not in ("gain", "complex"):
            raise ValueError(f"model.mask must be 'gain' or 'complex', got {mask!r}")
        if residual and mask != "complex":
            raise ValueError("model.residual=true needs model.mask=complex (a spectrum is added to a complex mask)")
        self.feature_kind, self.mask, self.residual, self.compress = features, mask, residual, compress
        self.hypot = torch.hypot
        self.features = self.bins * (1 if features == "magnitude" else 2)
        self.outputs = self.bins * (1 if mask == "gain" else 4 if residual else 2)

    # Both work frame-major, (B, N, bins) (torch.stft computes that layout and hands back a
    # transposed view, so it costs no copy), and in real arithmetic on (re, im) pairs: real
    # element-wise ops, forward and backward, are cheaper on CPU than complex autograd. The
    # numbers are those of the complex formulas in the docstrings (tests/test_lstm.py).

    def analyse(self, x):
        spec = self.spectrum(x)
        s = torch.view_as_real(spec)
        return self.features_of(s[..., 0], s[..., 1]), spec

    def synthesise(self, y, spec, length):
        s = torch.view_as_real(spec)
        return self._waveform_of(torch.stack(self.masked(y, s[..., 0], s[..., 1]), dim=-1), length)

    def features_of(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        """Features of a spectrum given as its real and imaginary parts (..., bins)."""
        mag = self.hypot(re, im)
        if self.feature_kind == "magnitude":
            return torch.log1p(mag)
        # compressed = spec * |spec|^(c - 1): the phase kept, the magnitude compressed
        factor = mag.clamp_min(1e-8).pow(self.compress - 1)
        return torch.cat([re * factor, im * factor], dim=-1)

    def masked(self, y: torch.Tensor, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output spectrum for network output `y` (..., outputs) against the noisy one.
        Gain: spec * sigmoid(y). Complex: spec * m * tanh(|m|) / |m| with m = y_re + i y_im
        (DCCRN's bounded mask), plus y_re' + i y_im' with `residual`."""
        y = y.float()
        if self.mask == "gain":
            gain = torch.sigmoid(y)
            return re * gain, im * gain
        b = self.bins
        m_re, m_im = y[..., :b], y[..., b : 2 * b]
        # |m| with a gradient at m = 0: torch.hypot's is 0/0 there, and a bf16 head output
        # (8-bit mantissa) does give exact zeros in both parts: NaN gradients within 10
        # steps of a small bf16 LSTM (tests/test_lstm.py). The 1e-20 moves |m| by < 1e-10.
        size = (m_re * m_re + m_im * m_im + 1e-20).sqrt()
        bound = torch.tanh(size) / (size + 1e-8)
        m_re, m_im = m_re * bound, m_im * bound
        out_re, out_im = re * m_re - im * m_im, re * m_im + im * m_re
        if self.residual:
            out_re, out_im = out_re + y[..., 2 * b : 3 * b], out_im + y[..., 3 * b :]
        return out_re, out_im

    def exportable(self) -> None:
        """Compute the features' |z| as a square root: ONNX has no hypot. For inference
        only: hypot keeps its precision for magnitudes far from 1."""
        self.hypot = _root_sum_square

    # One frame at a time (models/streaming.py): the same features and mask on a frame the
    # caller cut, with the DFT as two matrix products (ONNX has no complex tensors).
    def frame_analyse(self, frame: torch.Tensor, dft: FrameDFT):
        re, im = dft.forward(frame * self.stft.window)
        return self.features_of(re, im), (re, im)

    def frame_synthesise(self, y: torch.Tensor, context, dft: FrameDFT) -> torch.Tensor:
        return dft.inverse(*self.masked(y, *context)) * self.istft.window

    @property
    def synthesis_window(self) -> torch.Tensor:
        return self.istft.window

    def _waveform_of(self, pairs: torch.Tensor, length: int) -> torch.Tensor:
        """(B, N, bins, 2) real/imaginary pairs -> (B, length)."""
        return self.waveform(torch.view_as_complex(pairs.contiguous()), length)


def _root_sum_square(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * a + b * b).sqrt()


class Waveform(Representation):
    """Raw samples: sqrt-Hann windowed frames in, a correction to each frame out, then
    weighted overlap-add (the window-sum normalisation makes analysis + synthesis exact)."""

    def __init__(self, n_fft: int = 512, hop: int = 128):
        super().__init__()
        if not 0 < hop <= n_fft:
            raise ValueError(f"model.hop must be in (0, n_fft={n_fft}], got {hop}")
        self.frame, self.hop = n_fft, hop
        self.features = self.outputs = n_fft
        self.register_buffer("window", torch.hann_window(n_fft).sqrt(), persistent=False)

    def analyse(self, x):
        # pad the start by frame - hop: every sample is then covered by frames whose windows
        # are non-zero there (the sqrt-Hann window is 0 at its first sample)
        x, lead = x.float(), self.frame - self.hop
        n = max(1, -(-(x.shape[-1] + lead - self.frame) // self.hop) + 1)
        x = F.pad(x, (lead, (n - 1) * self.hop + self.frame - x.shape[-1] - lead))
        frames = x.unfold(-1, self.frame, self.hop) * self.window  # (B, N, frame)
        return frames, frames

    def synthesise(self, y, frames, length):
        frames = (frames + y.float()) * self.window  # residual: an untrained model passes the input
        n, lead = frames.shape[1], self.frame - self.hop
        total = (n - 1) * self.hop + self.frame
        fold = dict(output_size=(1, total), kernel_size=(1, self.frame), stride=(1, self.hop))
        out = F.fold(frames.transpose(1, 2), **fold)[:, 0, 0]
        norm = F.fold(self.window.pow(2).expand(1, n, -1).transpose(1, 2), **fold)[:, 0, 0]
        return (out / norm.clamp_min(1e-8))[:, lead : lead + length]

    def frame_analyse(self, frame: torch.Tensor, dft=None):
        frame = frame * self.window
        return frame, frame

    def frame_synthesise(self, y: torch.Tensor, frame, dft=None) -> torch.Tensor:
        return (frame + y.float()) * self.window

    @property
    def synthesis_window(self) -> torch.Tensor:
        return self.window


class FrameDFT(nn.Module):
    """The real DFT of an `n`-sample frame and its inverse as matrix products, equal to
    `torch.fft.rfft` / `irfft` to float rounding."""

    def __init__(self, n: int):
        super().__init__()
        bins = n // 2 + 1
        k, t = torch.arange(bins, dtype=torch.float64), torch.arange(n, dtype=torch.float64)
        angle = 2 * torch.pi * torch.outer(k, t) / n
        # irfft counts the bins between DC and Nyquist twice (their conjugates) and ignores
        # the imaginary parts of DC and, for even n, Nyquist
        weight = torch.full((bins, 1), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if n % 2 == 0:
            weight[-1] = 1.0
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", -angle.sin().float(), persistent=False)
        self.register_buffer("icos", (weight * angle.cos() / n).float(), persistent=False)
        self.register_buffer("isin", (-weight * angle.sin() / n).float(), persistent=False)

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., n) -> real and imaginary parts (..., bins)."""
        return frame @ self.cos.T, frame @ self.sin.T

    def inverse(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        return re @ self.icos + im @ self.isin


def frame_envelope(window: torch.Tensor, hop: int) -> torch.Tensor:
    """(hop,): what a streaming overlap-add divides each output hop by, the sum of the squared
    synthesis windows of all frames over it (as torch.istft and `Waveform`'s fold do)."""
    window = window.detach().float()
    envelope = torch.zeros(hop)
    for start in range(0, window.numel(), hop):
        part = window[start : start + hop].pow(2)
        envelope[: part.numel()] += part
    return envelope.clamp_min(1e-8)


def stream_latency(n_fft: int, hop: int, sample_rate: int) -> dict[str, float]:
    """A frame-by-frame stream's delays: output sample i is input sample i - (n_fft - hop);
    with the hop a sample waits to be buffered, n_fft samples; DNS-Challenge rules also
    count one hop of compute: n_fft + hop."""
    ms = 1000.0 / sample_rate
    return {
        "hop_ms": hop * ms,
        "window_ms": n_fft * ms,
        "output_delay_samples": n_fft - hop,
        "algorithmic_ms": n_fft * ms,
        "algorithmic_plus_hop_ms": (n_fft + hop) * ms,
    }


class LogMel(Representation):
    """log(mel power + floor) frames, for recognition front ends (no synthesis)."""

    def __init__(
        self, sample_rate: int = 16000, n_fft: int = 400, hop: int = 160, n_mels: int = 40, floor: float = 1e-6
    ):
        super().__init__()
        self.hop, self.floor = hop, floor
        self.mel = T.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
        self.features = n_mels

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames covering each signal length (centred STFT: one per hop, plus one)."""
        return torch.div(lengths, self.hop, rounding_mode="floor") + 1

    def analyse(self, x):
        with _no_autocast(x):
            return torch.log(self.mel(x.float()) + self.floor).transpose(1, 2), None


def make(domain: str, n_fft: int, hop: int, mask: str = "complex", residual: bool = False) -> Representation:
    """The representation a waveform-in, waveform-out model names by `domain` (its input
    features) and `mask` (what an STFT domain predicts; the waveform domain has no mask)."""
    if domain == "waveform":
        if residual:
            raise ValueError("model.residual=true needs an STFT domain (magnitude or complex)")
        return Waveform(n_fft, hop)
    return STFTMask(n_fft, hop, features=domain, mask=mask, residual=residual)
