"""The transducer loss: `torchaudio.functional.rnnt_loss` over the model's joint lattice."""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn


class RNNTLoss(nn.Module):
    """Negative log-probability of the target tokens summed over every alignment, averaged
    over the batch (or per target token with `per_token=True`, so utterances of different
    lengths weigh alike).

    rnnt_loss wants raw logits (it applies the log-softmax itself, fused: `fused_log_softmax`
    stays on), float32 logits (it refuses bf16; fp16 would lose the lattice's small
    probabilities, so autocast is left here), int32 targets and lengths, and a lattice no
    larger than the longest utterance in the batch: the padded lattice the model produces
    (fixed shapes suit compilation and CUDA graphs) is cut to the batch's maxima here.
    """

    def __init__(self, blank: int = 0, clamp: float = -1.0, per_token: bool = False):
        super().__init__()
        self.blank, self.clamp, self.per_token = blank, clamp, per_token

    def forward(self, output, target: dict[str, torch.Tensor]) -> torch.Tensor:
        logit_lengths = output.logit_lengths.int()
        token_lengths = target["token_lengths"].int()
        frames, tokens = int(logit_lengths.max()), int(token_lengths.max())
        logits = output.logits[:, :frames, : tokens + 1].float().contiguous()
        with torch.autocast(logits.device.type, enabled=False):
            losses = AF.rnnt_loss(
                logits,
                target["tokens"][:, :tokens].int(),
                logit_lengths,
                token_lengths,
                blank=self.blank,
                clamp=self.clamp,
                reduction="none",
            )
        if self.per_token:
            losses = losses / token_lengths.clamp_min(1)
        return losses.mean()
