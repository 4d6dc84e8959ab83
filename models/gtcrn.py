"""A GTCRN-style enhancer (Rong et al., "GTCRN: a speech enhancement model requiring
ultralow computational resources", ICASSP 2024): about 24 k parameters and 33 M
multiply-accumulates per second of 16 kHz audio, causal.

The design, as the paper describes it:

* **Input**: a 512-point STFT (hop 256, square-root Hann) with three channels per bin:
  magnitude, real and imaginary part.
* **ERB band merging**: the 65 lowest bins stay as they are, the 192 upper bins become 64
  ERB-spaced triangular bands (a fixed matrix; `bs` spreads them back): 129 frequencies.
* **Sub-band feature extraction (SFE)**: each frequency gets its two neighbours' values as
  extra channels (an unfold of width 3): 9 channels.
* **Encoder**: two frequency-downsampling convolutions (129 -> 65 -> 33, the second grouped),
  then three grouped temporal convolution blocks (GT-Conv, ShuffleNetV2-style: half the
  channels through point-wise / depth-wise dilated causal / point-wise convolutions with
  SFE and temporal recurrent attention, the other half passed, then shuffled) with
  dilations 1, 2, 5 in time.
* **Two grouped dual-path GRNNs**: a bidirectional GRU across frequency within each frame
  (the whole frame is known), then a causal GRU along time per frequency, each grouped in
  two and followed by a linear layer, a layer norm and a residual.
* **Decoder**: the mirror image (GT-Conv dilations 5, 2, 1, then two transposed
  convolutions 33 -> 65 -> 129), each block's input plus the encoder's output of the same
  level; a tanh gives a two-channel **complex ratio mask**, spread back to 257 bins and
  multiplied with the noisy spectrum.

Every convolution in time is left-padded only, the time GRU is unidirectional, and the
STFT's frames do not overlap the future by more than the frame itself: the output at frame
t depends on input frames up to t (tests/test_gtcrn.py checks it). Written from the paper's
description and its authors' reference for the exact sizes.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.representations import FrameDFT, frame_envelope, stream_latency


def erb_matrix(low_bins: int, bands: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """(bands, n_fft // 2 + 1 - low_bins): triangular filters evenly spaced on the ERB scale
    from the first bin above `low_bins` to Nyquist, each a weighting of the upper bins."""

    def hz_to_erb(f):
        return 21.4 * np.log10(0.00437 * f + 1)

    def erb_to_hz(e):
        return (10 ** (e / 21.4) - 1) / 0.00437

    points = np.linspace(hz_to_erb(low_bins / n_fft * sample_rate), hz_to_erb(sample_rate / 2), bands)
    edges = np.round(erb_to_hz(points) / sample_rate * n_fft).astype(int)
    filters = np.zeros((bands, n_fft // 2 + 1), np.float32)
    for i in range(bands):  # rising from the previous edge, falling to the next one
        if i > 0:
            lo, mid = edges[i - 1], edges[i]
            filters[i, lo:mid] = (np.arange(lo, mid) - lo) / max(mid - lo, 1)
        if i < bands - 1:
            mid, hi = edges[i], edges[i + 1]
            filters[i, mid:hi] = (hi - np.arange(mid, hi)) / max(hi - mid, 1)
    filters[-1, edges[-1] :] = 1.0  # the last band reaches Nyquist
    return torch.from_numpy(filters[:, low_bins:])


class FixedLinear(nn.Module):
    """A linear map that is not trained (the ERB filters): a buffer, so it is neither
    optimised nor saved, but a module, so that MAC counters (ptflops) see it as the design's
    authors counted it."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def sub_bands(x: torch.Tensor) -> torch.Tensor:
    """SFE: (B, C, T, F) -> (B, 3C, T, F), each frequency with its two neighbours (channel
    3c + k: neighbour k - 1 of channel c, the order of an unfold of width 3, written with
    slices because ONNX has no unfold)."""
    padded = F.pad(x, (1, 1))
    f = x.shape[-1]
    return torch.stack([padded[..., k : k + f] for k in range(3)], dim=2).flatten(1, 2)


class TemporalAttention(nn.Module):
    """TRA: a per-channel gain for each frame from a GRU over the frames' energies."""

    def __init__(self, channels: int):
        super().__init__()
        self.gru = nn.GRU(channels, 2 * channels, batch_first=True)
        self.fc = nn.Linear(2 * channels, channels)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None):
        """(B, C, T, F) -> the same, gained; with `hidden` (B, 2C), the GRU's state before
        these frames, also returns its state after them (the streaming form)."""
        energy = x.pow(2).mean(-1).transpose(1, 2)  # (B, T, C)
        y, last = self.gru(energy, None if hidden is None else hidden[None].contiguous())
        gain = torch.sigmoid(self.fc(y)).transpose(1, 2)
        return x * gain[..., None] if hidden is None else (x * gain[..., None], last[0])


class ConvBlock(nn.Module):
    """A (transposed) convolution along frequency, batch norm, PReLU (tanh when last)."""

    def __init__(self, cin: int, cout: int, groups: int = 1, up: bool = False, last: bool = False):
        super().__init__()
        conv = nn.ConvTranspose2d if up else nn.Conv2d
        self.conv = conv(cin, cout, (1, 5), stride=(1, 2), padding=(0, 2), groups=groups)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.Tanh() if last else nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class GTConvBlock(nn.Module):
    """Grouped temporal convolution: half the channels through SFE, a point-wise, a causal
    dilated depth-wise (3 frames x 3 frequencies) and a point-wise convolution and TRA;
    the other half as they are; the two halves interleaved (channel shuffle)."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        half = channels // 2
        self.pad = 2 * dilation  # (kernel - 1) frames of the past, none of the future
        self.point1 = nn.Sequential(nn.Conv2d(3 * half, channels, 1), nn.BatchNorm2d(channels), nn.PReLU())
        self.depth = nn.Sequential(
            nn.Conv2d(channels, channels, (3, 3), padding=(0, 1), dilation=(dilation, 1), groups=channels),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
        )
        self.point2 = nn.Sequential(nn.Conv2d(channels, half, 1), nn.BatchNorm2d(half))
        self.attention = TemporalAttention(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        h = self.point1(sub_bands(x1))
        h = self.depth(F.pad(h, (0, 0, self.pad, 0)))
        h = self.attention(self.point2(h))
        return torch.stack([h, x2], dim=2).flatten(1, 2)  # (B, C, T, F), the halves interleaved

    def step(self, x: torch.Tensor, past: torch.Tensor, hidden: torch.Tensor):
        """One frame (B, C, 1, F), with the depth-wise convolution's `past` input frames
        (B, C, pad, F) in place of the zero padding and the attention GRU's `hidden`:
        (output, past, hidden) for the next frame."""
        x1, x2 = x.chunk(2, dim=1)
        h = torch.cat([past, self.point1(sub_bands(x1))], dim=2)
        past = h[:, :, 1:]
        h, hidden = self.attention(self.point2(self.depth(h)), hidden)
        return torch.stack([h, x2], dim=2).flatten(1, 2), past, hidden


class GroupedGRU(nn.Module):
    """Two GRUs, each on half of the features."""

    def __init__(self, size: int, hidden: int, bidirectional: bool):
        super().__init__()
        self.a = nn.GRU(size // 2, hidden // 2, batch_first=True, bidirectional=bidirectional)
        self.b = nn.GRU(size // 2, hidden // 2, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None):
        """(N, T, size) -> (N, T, hidden); a unidirectional pair given `hidden` (N, hidden),
        the two GRUs' states side by side, also returns them after these frames."""
        x1, x2 = x.chunk(2, dim=-1)
        if hidden is None:
            return torch.cat([self.a(x1)[0], self.b(x2)[0]], dim=-1)
        h1, h2 = hidden.chunk(2, dim=-1)
        (y1, h1), (y2, h2) = self.a(x1, h1[None].contiguous()), self.b(x2, h2[None].contiguous())
        return torch.cat([y1, y2], dim=-1), torch.cat([h1[0], h2[0]], dim=-1)


class DualPathGRNN(nn.Module):
    """Across frequency within each frame (bidirectional), then along time (causal)."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.intra = GroupedGRU(channels, channels // 2, bidirectional=True)  # 2 directions: `channels` out
        self.intra_fc = nn.Linear(channels, channels)
        self.intra_norm = nn.LayerNorm((width, channels), eps=1e-8)
        self.inter = GroupedGRU(channels, channels, bidirectional=False)
        self.inter_fc = nn.Linear(channels, channels)
        self.inter_norm = nn.LayerNorm((width, channels), eps=1e-8)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None):
        """(B, C, T, F) -> the same; given `hidden` (B, F, C), the time GRUs' state before
        these frames, also returns it after them (the streaming form)."""
        b, c, t, f = x.shape
        x = x.permute(0, 2, 3, 1)  # (B, T, F, C)
        across = self.intra_fc(self.intra(x.reshape(b * t, f, c))).reshape(b, t, f, c)
        x = x + self.intra_norm(across)
        along = x.transpose(1, 2).reshape(b * f, t, c)
        if hidden is None:
            along = self.inter(along)
        else:
            along, hidden = self.inter(along, hidden.reshape(b * f, c))
            hidden = hidden.reshape(b, f, c)
        along = self.inter_fc(along).reshape(b, f, t, c).transpose(1, 2)
        x = (x + self.inter_norm(along)).permute(0, 3, 1, 2)
        return x if hidden is None else (x, hidden)


class GTCRN(nn.Module):
    """Waveform (B, T) in, waveform (B, T) out; see the module docstring."""

    def __init__(self, n_fft: int = 512, hop: int = 256, sample_rate: int = 16000, low_bins: int = 65,
                 erb_bands: int = 64, hidden: int = 16):  # fmt: skip
        super().__init__()
        bins = n_fft // 2 + 1
        if not 0 < low_bins < bins:
            raise ValueError(f"model.low_bins must be between 1 and {bins - 1} (n_fft // 2), got {low_bins}")
        merged = low_bins + erb_bands
        if (merged - 1) % 4:
            raise ValueError(
                f"model: low_bins + erb_bands - 1 must be a multiple of 4 (two halvings of the frequencies), "
                f"got {low_bins} + {erb_bands}"
            )
        if hidden < 4 or hidden % 4:
            raise ValueError(
                f"model.hidden (the channels) must be a positive multiple of 4 (halves, grouped in two), got {hidden}"
            )
        channels = hidden
        self.n_fft, self.hop, self.low_bins = n_fft, hop, low_bins
        self.register_buffer("window", torch.hann_window(n_fft).sqrt(), persistent=False)
        erb = erb_matrix(low_bins, erb_bands, n_fft, sample_rate)
        self.erb, self.ierb = FixedLinear(erb), FixedLinear(erb.T.contiguous())
        self.encoder = nn.ModuleList(
            [ConvBlock(9, channels), ConvBlock(channels, channels, groups=2)]
            + [GTConvBlock(channels, d) for d in (1, 2, 5)]
        )
        width = (merged - 1) // 4 + 1
        self.dual_path = nn.Sequential(DualPathGRNN(channels, width), DualPathGRNN(channels, width))
        self.decoder = nn.ModuleList(
            [GTConvBlock(channels, d) for d in (5, 2, 1)]
            + [ConvBlock(channels, channels, groups=2, up=True), ConvBlock(channels, 2, up=True, last=True)]
        )

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., : self.low_bins], self.erb(x[..., self.low_bins :])], dim=-1)

    def spread(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., : self.low_bins], self.ierb(x[..., self.low_bins :])], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        with torch.autocast(x.device.type, enabled=False):  # the STFT and the mask in float32
            spec = torch.stft(x.float(), self.n_fft, self.hop, window=self.window, return_complex=True)
            re, im = spec.real.transpose(1, 2), spec.imag.transpose(1, 2)  # (B, T, F)
        h = features(re, im, self.merge)
        skips = []
        for block in self.encoder:
            h = block(h)
            skips.append(h)
        h = self.dual_path(h)
        for block, skip in zip(self.decoder, reversed(skips)):
            h = block(h + skip)
        with torch.autocast(x.device.type, enabled=False):
            re, im = apply_mask(re, im, self.spread(h.float()))
            out = torch.complex(re, im).transpose(1, 2)
            return torch.istft(out, self.n_fft, self.hop, window=self.window, length=length)


def features(re: torch.Tensor, im: torch.Tensor, merge) -> torch.Tensor:
    """The spectrum (B, T, bins) as the encoder's input: magnitude, real and imaginary part,
    ERB-merged, with each band's neighbours (B, 9, T, merged)."""
    return sub_bands(merge(torch.stack([torch.sqrt(re.square() + im.square()), re, im], dim=1)))


def apply_mask(re: torch.Tensor, im: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The spectrum times the complex ratio mask (B, 2, T, bins), in real arithmetic."""
    m_re, m_im = mask[:, 0], mask[:, 1]
    return re * m_re - im * m_im, re * m_im + im * m_re


class StreamingGTCRN(nn.Module):
    """A `GTCRN` run one hop at a time, every piece of its state passed in and handed back
    (the form `trainer.export` writes and `trainer.enhance --stream` runs), like
    models/streaming.py's LSTM:

        out, frame, overlap, conv, attention, grnn = step(chunk, frame, overlap, conv, attention, grnn)

    | tensor      | shape                     | what it holds                                        |
    |-------------|---------------------------|------------------------------------------------------|
    | `chunk`     | (B, hop)                  | the next `hop` input samples                         |
    | `out`       | (B, hop)                  | `hop` output samples, `n_fft - hop` samples behind   |
    | `frame`     | (B, n_fft - hop)          | the last input samples: the next frame's first part  |
    | `overlap`   | (B, n_fft - hop)          | the overlap-add tail of the frames synthesised so far|
    | `conv`      | (B, C, 32, bands / 4 + 1) | the six GT-Conv blocks' past frames (2 x dilation each) |
    | `attention` | (B, 6, C)                 | the six temporal attention GRUs' states              |
    | `grnn`      | (B, 2, bands / 4 + 1, C)  | the two dual-path blocks' time GRUs' states          |

    All state starts at zero. Each call cuts one frame (the stored samples plus the chunk),
    takes its DFT with two matrix products (ONNX has no complex tensors), runs every block
    of the trained model on that one frame (the depth-wise convolutions read their stored
    past frames instead of zero padding, the GRUs start from their stored states) and
    overlap-adds the masked frame: the whole-utterance model's arithmetic, so the stream
    equals it once its centred, reflect-padded first frame is out of the way
    (tests/test_gtcrn.py checks it)."""

    state_names = ("frame", "overlap", "conv", "attention", "grnn")
    batch_dims = (0, 0, 0, 0, 0)

    def __init__(self, model: GTCRN, sample_rate: int):
        super().__init__()
        self.model = copy.deepcopy(model).float().eval()  # batch norms with their running statistics
        self.n_fft, self.hop, self.sample_rate = model.n_fft, model.hop, sample_rate
        self.dft = FrameDFT(self.n_fft)
        self.blocks = [b for b in (*self.model.encoder, *self.model.decoder) if isinstance(b, GTConvBlock)]
        self.past = [b.pad for b in self.blocks]
        self.register_buffer("envelope", frame_envelope(model.window, self.hop), persistent=False)

    def initial_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        m = self.model
        channels, width = m.encoder[0].conv.out_channels, m.dual_path[0].intra_norm.normalized_shape[0]
        tail = self.n_fft - self.hop
        return (
            torch.zeros(batch, tail),
            torch.zeros(batch, tail),
            torch.zeros(batch, channels, sum(self.past), width),
            torch.zeros(batch, len(self.blocks), channels),
            torch.zeros(batch, len(m.dual_path), width, channels),
        )

    def forward(self, chunk, frame, overlap, conv, attention, grnn):
        m = self.model
        x = torch.cat([frame, chunk], dim=-1)  # (B, n_fft): the newest frame
        re, im = self.dft(x * m.window)
        re, im = re[:, None], im[:, None]  # (B, 1 frame, bins)
        h = features(re, im, m.merge)
        pasts, hiddens, grnns = [], [], []
        cuts = iter(torch.split(conv, self.past, dim=2))
        k = 0

        def through(block, h):
            nonlocal k
            if not isinstance(block, GTConvBlock):
                return block(h)
            h, past, hidden = block.step(h, next(cuts), attention[:, k])
            pasts.append(past)
            hiddens.append(hidden)
            k += 1
            return h

        skips = []
        for block in m.encoder:
            h = through(block, h)
            skips.append(h)
        for j, block in enumerate(m.dual_path):
            h, g = block(h, grnn[:, j])
            grnns.append(g)
        for block, skip in zip(m.decoder, reversed(skips)):
            h = through(block, h + skip)
        re, im = apply_mask(re, im, m.spread(h))
        total = self.dft.inverse(re[:, 0], im[:, 0]) * m.window + nn.functional.pad(overlap, (0, self.hop))
        out = total[:, : self.hop] / self.envelope
        return (out, x[:, self.hop :], total[:, self.hop :], torch.cat(pasts, dim=2),
                torch.stack(hiddens, dim=1), torch.stack(grnns, dim=1))  # fmt: skip

    def latency(self) -> dict[str, float]:
        return stream_latency(self.n_fft, self.hop, self.sample_rate)
