"""The streaming forms (`streaming_form`): the GTCRN's is `models.gtcrn.StreamingGTCRN`;
this module holds the causal LSTM's, and the bidirectional LSTM's whole-utterance export.

A causal `LSTMEnhancer` run one hop at a time, with all of its state passed in and handed
back, so that a runtime with no notion of PyTorch modules (TorchScript, ONNX Runtime, an
application's audio callback) can run it:

    out, frame, overlap, h, c, level = step(chunk, frame, overlap, h, c, level)

| tensor    | shape                       | what it holds                                          |
|-----------|-----------------------------|--------------------------------------------------------|
| `chunk`   | (B, hop)                    | the next `hop` input samples                           |
| `out`     | (B, hop)                    | `hop` output samples, `n_fft - hop` samples behind     |
| `frame`   | (B, n_fft - hop)            | the last input samples: the next frame's first part    |
| `overlap` | (B, n_fft - hop)            | the overlap-add tail of the frames synthesised so far  |
| `h`, `c`  | (layers, B, hidden or proj) | the LSTM stack's state                                 |
| `level`   | (B, 2)                      | the running input level (weighted power, weight)       |

All state starts at zero (`initial_state`). Each call cuts one frame (the stored samples
plus the chunk), runs the trained model's own representation, normalisation, LSTM and head
on it, and overlap-adds the synthesised frame: the same arithmetic as the whole-utterance
model, so with the same level and `n_fft = 2 * hop` (the default) the stream reproduces the
offline output exactly once the offline model's centred, reflect-padded first frame is
out of the way (tests/test_export.py checks it on a signal that starts with silence). The
DFT is two matrix products (`representations.FrameDFT`): ONNX has no complex tensors.

**Level.** The offline model divides each utterance by its RMS over the whole utterance,
which a stream does not have. Here the level is a running RMS over the past, weighted
exp(-age / `level_seconds`) and normalised by the weights' sum, so it is the plain mean of
all the audio so far at the start of a stream and forgets older audio after that
(`level_seconds=inf`: never forgets; `fixed_scale`: a constant, for calibrated input). The
scale only changes what the network sees: a mask model's output is the mask times the
(unscaled) noisy spectrum.

**Latency.** Output sample i is input sample i - (n_fft - hop). Counting the hop a sample
waits to be buffered, the constant input-to-output delay is n_fft samples; DNS-Challenge
rules also count one hop of compute budget: n_fft + hop (`latency`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from models.gtcrn import GTCRN, StreamingGTCRN
from models.lstm import LSTMEnhancer
from models.representations import FrameDFT, frame_envelope, stream_latency

STATE_NAMES = ("frame", "overlap", "h", "c", "level")


def is_streamable(model) -> bool:
    """The models with a hop-by-hop form: a causal LSTM enhancer and the GTCRN."""
    return isinstance(model, GTCRN) or (isinstance(model, LSTMEnhancer) and not model.rnn.lstm.bidirectional)


def streaming_form(model, sample_rate: int, level_seconds: float = 3.0, fixed_scale: float | None = None):
    """`model`'s hop-by-hop form: a module `step(chunk, *state) -> (out, *state)` with
    `initial_state(batch)`, `state_names`, `batch_dims` (each state's batch axis), `hop`,
    `n_fft` and `latency()`. The level arguments are the LSTM's (the GTCRN sees the spectrum
    as it is: it has no level normalisation)."""
    if isinstance(model, GTCRN):
        return StreamingGTCRN(model, sample_rate)
    return StreamingEnhancer(model, sample_rate, level_seconds=level_seconds, fixed_scale=fixed_scale)


def _exportable_copy(model: LSTMEnhancer):
    """A copy of `model` in export-safe operations, with its (n_fft, hop)."""
    model = copy.deepcopy(model)
    model.rep.exportable()
    rep = model.rep
    return model, (rep.frame, rep.hop) if hasattr(rep, "frame") else (rep.stft.n_fft, rep.stft.hop_length)


class StreamingEnhancer(nn.Module):
    state_names = STATE_NAMES
    batch_dims = (0, 0, 1, 1, 0)

    def __init__(
        self,
        model: LSTMEnhancer,
        sample_rate: int,
        level_seconds: float = 3.0,
        fixed_scale: float | None = None,
    ):
        super().__init__()
        if model.rnn.lstm.bidirectional:
            raise ValueError("a bidirectional LSTM reads the future: it has no streaming form (export it whole)")
        if not level_seconds > 0:
            raise ValueError(f"level_seconds must be > 0 (inf: never forget), got {level_seconds}")
        model, (self.n_fft, self.hop) = _exportable_copy(model)
        rep = model.rep
        self.sample_rate = sample_rate
        self.rep, self.norm, self.lstm, self.head = rep, model.norm, model.rnn.lstm, model.head
        self.floor = model.level.floor
        self.fixed_scale = fixed_scale
        # weighted power: p' = decay * p + mean(chunk^2), weight' = decay * weight + 1
        self.decay = math.exp(-self.hop / (level_seconds * sample_rate)) if math.isfinite(level_seconds) else 1.0
        self.dft = FrameDFT(self.n_fft)
        self.register_buffer("envelope", frame_envelope(rep.synthesis_window, self.hop), persistent=False)

    def initial_state(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        lstm, tail = self.lstm, self.n_fft - self.hop
        layers, size = lstm.num_layers, lstm.proj_size or lstm.hidden_size
        return (
            torch.zeros(batch, tail),
            torch.zeros(batch, tail),
            torch.zeros(layers, batch, size),
            torch.zeros(layers, batch, lstm.hidden_size),
            torch.zeros(batch, 2),
        )

    def forward(self, chunk, frame, overlap, h, c, level):
        x = torch.cat([frame, chunk], dim=-1)  # (B, n_fft): the newest frame
        if self.fixed_scale is None:
            power = torch.stack([chunk.pow(2).mean(dim=-1), torch.ones_like(chunk[:, 0])], dim=-1)
            level = level * self.decay + power
            scale = (level[:, :1] / level[:, 1:]).sqrt() + self.floor
        else:
            scale = torch.full_like(chunk[:, :1], self.fixed_scale + self.floor)
        feats, context = self.rep.frame_analyse(x / scale, self.dft)
        y, (h, c) = self.lstm(self.norm(feats).unsqueeze(1), (h, c))
        synthesised = self.rep.frame_synthesise(self.head(y[:, 0]), context, self.dft) * scale
        total = synthesised + nn.functional.pad(overlap, (0, self.hop))
        out = total[:, : self.hop] / self.envelope
        return out, x[:, self.hop :], total[:, self.hop :], h, c, level

    def latency(self) -> dict[str, float]:
        return stream_latency(self.n_fft, self.hop, self.sample_rate)


@torch.no_grad()
def run(step, audio: torch.Tensor, state: tuple[torch.Tensor, ...], hop: int) -> torch.Tensor:
    """Feed `audio` (B, time) through `step` (a `StreamingEnhancer` or its export) hop by
    hop, zero-padded to whole hops, and join the outputs: (B, hops * hop), delayed by
    n_fft - hop samples."""
    pad = -audio.shape[-1] % hop
    audio = nn.functional.pad(audio, (0, pad))
    outs = []
    for chunk in audio.split(hop, dim=-1):
        out, *state = step(chunk, *state)
        outs.append(out)
    return torch.cat(outs, dim=-1)


class WholeUtterance(nn.Module):
    """A (bidirectional, non-causal) `LSTMEnhancer` on a whole utterance, through the same
    frame path as `StreamingEnhancer`, for export. The model's own forward goes through
    torch.stft / istft, which neither ONNX exporter translates (torch 2.14); this cuts the
    frames and overlap-adds them with slices, pads and sums (`n_fft` a multiple of `hop`),
    so any runtime runs it on any length. Same output as the model's forward, to float
    rounding (tests/test_export.py)."""

    def __init__(self, model: LSTMEnhancer):
        super().__init__()
        model, (self.n_fft, self.hop) = _exportable_copy(model)
        rep = model.rep
        self.stft = not hasattr(rep, "frame")
        if self.n_fft % self.hop:
            raise ValueError(f"export needs model.n_fft ({self.n_fft}) to be a multiple of model.hop ({self.hop})")
        self.ratio = self.n_fft // self.hop
        self.model, self.dft = model, FrameDFT(self.n_fft)
        self.register_buffer("window_power", rep.synthesis_window.detach().float().pow(2), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        model, hop, r = self.model, self.hop, self.ratio
        length = audio.shape[-1]
        x, scale = model.level(audio.float())
        if self.stft:  # torch.stft's centred frames: reflect-pad by n_fft / 2 on both sides
            frames_n = length // hop + 1
            lead = self.n_fft // 2
            x = nn.functional.pad(x.unsqueeze(1), (lead, lead), mode="reflect").squeeze(1)
        else:  # models.representations.Waveform's framing
            lead = self.n_fft - hop
            frames_n = torch.sym_max((length + lead - self.n_fft + hop - 1) // hop, 0) + 1
            x = nn.functional.pad(x, (lead, self.n_fft))
        blocks = x[:, : (frames_n + r - 1) * hop].reshape(x.shape[0], -1, hop)
        frames = torch.cat([blocks[:, j : j + frames_n] for j in range(r)], dim=-1)  # (B, N frames, n_fft)
        feats, context = model.rep.frame_analyse(frames, self.dft)
        h, _ = model.rnn.lstm(model.norm(feats))
        out = model.rep.frame_synthesise(model.head(h), context, self.dft)
        total = self._overlap_add(out)
        envelope = self._overlap_add(self.window_power.expand_as(out[:1]))
        return (total / envelope.clamp_min(1e-8))[:, lead : lead + length] * scale

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, N, n_fft) frames, one hop apart -> (B, (N + ratio - 1) * hop)."""
        parts = frames.reshape(frames.shape[0], frames.shape[1], self.ratio, self.hop)
        r = self.ratio
        total = sum(nn.functional.pad(parts[:, :, j], (0, 0, j, r - 1 - j)) for j in range(r))
        return total.reshape(frames.shape[0], -1)
