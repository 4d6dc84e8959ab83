"""A small RNN transducer (Graves, 2012): log-mel front end, LSTM encoder, LSTM prediction
network, additive joiner. Trained with `torchaudio.functional.rnnt_loss`
(losses/transducer.py); decoded greedily (`greedy_decode`).

Token ids: 0 is blank, 1..vocab_size-1 are real tokens. The prediction network starts each
utterance from blank (the usual start-of-sequence stand-in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from models.lstm import LSTMStack
from models.representations import LogMel


class TransducerOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, U + 1, vocab): unnormalised; rnnt_loss applies the log-softmax
    logit_lengths: torch.Tensor  # (B,) valid encoder frames
    encoded: torch.Tensor  # (B, T, joint): encoder output projected for the joiner (for decoding)


def greedy_decode(
    encoded: torch.Tensor,
    lengths: torch.Tensor,
    predict: Callable,
    join: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    blank: int = 0,
    max_symbols: int = 3,
) -> list[list[int]]:
    """Batched greedy transducer search.

    At each encoder frame, take the joiner's arg-max; a blank moves to the next frame, a
    token is emitted and advances the prediction network (at most `max_symbols` tokens per
    frame, so a bad model cannot loop forever). `predict(tokens (B, 1), state)` returns
    `(out (B, 1, D), state)`; `join(enc (B, D), pred (B, D))` returns logits `(B, V)`.
    """
    batch, frames = encoded.shape[:2]
    tokens = torch.full((batch, 1), blank, dtype=torch.long, device=encoded.device)
    pred, state = predict(tokens, None)
    hyps: list[list[int]] = [[] for _ in range(batch)]
    for t in range(frames):
        active = lengths > t
        for _ in range(max_symbols):
            best = join(encoded[:, t], pred[:, 0]).argmax(-1)
            emit = active & (best != blank)
            if not emit.any():
                break
            for b in emit.nonzero()[:, 0].tolist():
                hyps[b].append(int(best[b]))
            new_pred, new_state = predict(best[:, None], state)
            keep = emit[:, None, None]
            pred = torch.where(keep, new_pred, pred)
            # LSTM state is (layers, B, H): the batch is dimension 1
            state = tuple(torch.where(emit[None, :, None], n, o) for n, o in zip(new_state, state))
            active = emit
    return hyps


class Transducer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop: int = 160,
        n_mels: int = 40,
        stack: int = 2,
        hidden: int = 128,
        layers: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.0,
        proj_size: int = 0,
        forget_bias: float = 1.0,
        embed: int = 32,
        pred_hidden: int = 64,
        joint: int = 128,
        blank: int = 0,
        max_symbols: int = 3,
    ):
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"model.vocab_size must be >= 2 (blank + one token), got {vocab_size}")
        if stack < 1:
            raise ValueError(f"model.stack must be >= 1, got {stack}")
        self.vocab_size, self.blank, self.stack, self.max_symbols = vocab_size, blank, stack, max_symbols
        self.features = LogMel(sample_rate, n_fft, hop, n_mels)
        self.norm = nn.LayerNorm(n_mels * stack)
        self.encoder = LSTMStack(n_mels * stack, hidden, layers, bidirectional, dropout, proj_size, forget_bias)
        self.embed = nn.Embedding(vocab_size, embed)
        self.predictor = LSTMStack(embed, pred_hidden, 1, forget_bias=forget_bias)
        self.enc_proj = nn.Linear(self.encoder.output_size, joint)
        self.pred_proj = nn.Linear(pred_hidden, joint, bias=False)
        self.out = nn.Linear(joint, vocab_size)

    def encode(self, audio: torch.Tensor, audio_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) -> joiner-ready frames (B, T, joint) and their valid counts (B,).
        Adjacent frames are stacked `stack` at a time: a shorter sequence for the LSTM and
        a smaller (T x U) lattice for the loss."""
        feats, _ = self.features.analyse(audio)
        frames = feats.shape[1] - feats.shape[1] % self.stack
        feats = feats[:, :frames].reshape(feats.shape[0], frames // self.stack, -1)
        h, _ = self.encoder(self.norm(feats))
        lengths = torch.div(self.features.frames(audio_lengths) + self.stack - 1, self.stack, rounding_mode="floor")
        return self.enc_proj(h), lengths.clamp(max=h.shape[1])

    def predict(self, tokens: torch.Tensor, state=None):
        """Prediction network: (B, U) previous tokens -> (B, U, joint)."""
        g, state = self.predictor(self.embed(tokens), state)
        return self.pred_proj(g), state

    def join(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(encoded + predicted))

    def forward(self, inputs: dict[str, torch.Tensor]) -> TransducerOutput:
        """Teacher-forced lattice: `inputs` holds audio (B, samples), audio_lengths (B,) and
        tokens (B, U), padded with anything beyond each utterance's length."""
        encoded, lengths = self.encode(inputs["audio"], inputs["audio_lengths"])
        tokens = inputs["tokens"].long()
        start = torch.full_like(tokens[:, :1], self.blank)
        predicted, _ = self.predict(torch.cat([start, tokens], dim=1))  # (B, U + 1, joint)
        logits = self.join(encoded[:, :, None], predicted[:, None])  # (B, T, U + 1, V)
        return TransducerOutput(logits, lengths, encoded)

    @torch.no_grad()
    def decode(self, output: TransducerOutput) -> list[list[int]]:
        """Greedy hypotheses for a forward pass's encoder output."""
        return greedy_decode(
            output.encoded, output.logit_lengths, self.predict, self.join, self.blank, self.max_symbols
        )
