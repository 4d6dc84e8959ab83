"""The LSTM family: one recurrent block (`LSTMStack`) shared by the enhancement model here
and the transducer's encoder and prediction network (models/transducer.py).

What the block takes care of, so a model does not have to:

* **cuDNN's fused kernel.** One `nn.LSTM` for all layers and directions (not a Python loop
  of cells): on CUDA it runs as one cuDNN call, with or without `proj_size` (LSTMP). Its
  weights stay in the single flat buffer cuDNN wants: initialisation writes in place,
  `.to(device)` re-flattens.
* **Initialisation.** The forget gate's total bias is `forget_bias` (1 by default,
  Jozefowicz et al. 2015): the cell remembers by default, gradients survive long sequences
  from the first step. The weights keep PyTorch's uniform init: Xavier input and
  orthogonal recurrent weights were measured 0.5 dB worse after 600 steps of the default
  job (docs/guide/tasks-and-models.md).
* **Precision.** Under autocast the LSTM runs in the autocast dtype where PyTorch runs it
  in that dtype: bf16 on CPUs with native bf16, fp16 on CUDA (GradScaler guards its
  gradients). Three exceptions run the recurrence alone in float32 (`recurrence_dtype`):
  oneDNN has no fp16 LSTM on CPU; it has no bf16 LSTM on CPUs without native bf16 (AVX2
  only: it raises), which `models.kernels.cpu_bf16_lstm` finds out once per process; and
  under CUDA *bf16* autocast PyTorch casts cuDNN's LSTM to fp16 (measured, torch 2.11 on
  an H200): fp16's range with no loss scaler (bf16 runs have none) would be a silent
  underflow risk for the recurrent gradients.
* **torch.compile.** Dynamo deliberately does not trace `nn.LSTM` (its
  `allow_rnn=False` default): the recurrence runs as the eager cuDNN/oneDNN kernel between
  compiled regions, which is also the fastest way to run it. Every compile mode works;
  `fullgraph=true` cannot (the LSTM is a graph break).
* **Streaming.** `forward(x, state)` returns the state: a unidirectional stack fed chunk by
  chunk gives exactly the output of one call on the whole sequence.

Stability: the trainer clips the global gradient norm to `trainer.grad_clip` (5 by default),
which is what keeps an LSTM's occasional gradient spikes from wrecking a run.
"""

from __future__ import annotations

import torch
from torch import nn

from models import kernels, representations
from models.layers import LevelNorm


class LSTMStack(nn.Module):
    def __init__(
        self,
        input_size: int,
        hidden: int,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        proj_size: int = 0,
        forget_bias: float = 1.0,
    ):
        super().__init__()
        if layers < 1 or hidden < 1:
            raise ValueError(f"model.layers and model.hidden must be >= 1, got {layers} and {hidden}")
        if not 0 <= proj_size < hidden:
            raise ValueError(f"model.proj_size must be 0 (off) or below model.hidden={hidden}, got {proj_size}")
        if dropout and layers == 1:
            raise ValueError("model.dropout acts between stacked layers: it needs model.layers >= 2")
        self.lstm = nn.LSTM(
            input_size,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout,
            bidirectional=bidirectional,
            proj_size=proj_size,
        )
        self.output_size = (proj_size or hidden) * (2 if bidirectional else 1)
        self.reset_parameters(forget_bias)

    @torch.no_grad()
    def reset_parameters(self, forget_bias: float = 1.0) -> None:
        """Set each forget gate's total bias (b_ih + b_hh) to `forget_bias`; the weights keep
        PyTorch's uniform(+-1/sqrt(hidden)) initialisation."""
        hidden = self.lstm.hidden_size
        for name, param in self.lstm.named_parameters():
            # PyTorch's gate order: input, forget, cell, output
            if name.startswith("bias_ih"):
                param[hidden : 2 * hidden] = forget_bias
            elif name.startswith("bias_hh"):
                param[hidden : 2 * hidden] = 0.0

    @staticmethod
    def precision_path(device_type: str, autocast_dtype: torch.dtype) -> tuple[str, str]:
        """(name, the dtype the recurrence runs in and why) for the run's summary: the trainer
        asks every module that has this method when it sets up precision."""
        return "lstm", recurrence_dtype(device_type, autocast_dtype)[1]

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """(B, N, input_size) -> ((B, N, output_size), (h, c))."""
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        if dtype is not None and recurrence_dtype(device, dtype)[0] == torch.float32:
            with torch.autocast(device, enabled=False):
                state = None if state is None else tuple(s.float() for s in state)
                return self.lstm(x.float(), state)
        return self.lstm(x, state)


def recurrence_dtype(device_type: str, autocast_dtype: torch.dtype | None) -> tuple[torch.dtype | None, str]:
    """The dtype an `LSTMStack` runs its recurrence in under `autocast_dtype` on this device
    (None: no autocast, float32), and why, in words (for the log and summary.json)."""
    if autocast_dtype is None:
        return None, "float32 (no autocast)"
    name = str(autocast_dtype).removeprefix("torch.")
    if device_type == "cpu" and autocast_dtype == torch.float16:
        return torch.float32, "float32: oneDNN has no float16 LSTM"
    if device_type == "cuda" and autocast_dtype == torch.bfloat16:
        return torch.float32, "float32: CUDA bf16 autocast would run cuDNN's LSTM in float16, with no loss scaler"
    if device_type == "cpu" and autocast_dtype == torch.bfloat16:
        verdict = kernels.cpu_bf16_lstm()
        return (
            (autocast_dtype, f"{name}: {verdict.reason}")
            if verdict.native
            else (torch.float32, f"float32: {verdict.reason}")
        )
    return autocast_dtype, f"{name} (autocast)"


class LSTMEnhancer(nn.Module):
    """Waveform in, waveform out: a representation (models/representations.py) turns the
    level-normalised input into frames, the LSTM stack reads them, a linear head predicts
    what the representation synthesises (a mask, a spectrum or a frame correction).

    Unidirectional: causal, each output frame depends on the past only (plus the STFT
    window's lookahead). Bidirectional: offline, both directions.
    """

    def __init__(
        self,
        domain: str = "magnitude",
        n_fft: int = 512,
        hop: int = 128,
        hidden: int = 256,
        layers: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.0,
        proj_size: int = 0,
        forget_bias: float = 1.0,
        mask: str = "complex",
        residual: bool = False,
    ):
        super().__init__()
        self.domain = domain
        self.rep = representations.make(domain, n_fft, hop, mask, residual)
        self.level = LevelNorm()
        self.norm = nn.LayerNorm(self.rep.features)  # per-frame feature standardisation: faster, steadier start
        self.rnn = LSTMStack(self.rep.features, hidden, layers, bidirectional, dropout, proj_size, forget_bias)
        self.head = nn.Linear(self.rnn.output_size, self.rep.outputs)
        if domain == "waveform":  # start as the identity: the correction begins at zero
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        x, scale = self.level(x.float())
        feats, context = self.rep.analyse(x)
        h, _ = self.rnn(self.norm(feats))
        return self.rep.synthesise(self.head(h), context, length) * scale
