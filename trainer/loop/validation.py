"""Validation: one pass over the validation set (`validate`) and the component that decides
what each epoch's pass computes and logs (`Validation`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trainer.config import ValidationConfig
from trainer.loop.loggers import Logger
from trainer.loop.parts import Parts
from trainer.metrics import nan_mean


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def validate(
    p: Parts, slow_examples: int = 0, keep: int = 0, spend: Callable[[str, float], None] | None = None
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Mean of every loss term and task metric over the validation set, plus the task's
    slow metrics (PESQ, STOI) on the first `slow_examples` examples, and the first `keep`
    examples' input, output and target on the host (for TensorBoard audio and images).
    Data-parallel: each rank runs its share of the set, the sums are added up, rank 0's
    slow metrics and examples (the set's first) go to every rank. The slow metrics' wall
    time goes to `spend("slow_metrics", seconds)`.

    Runs the eager model (same parameters as the compiled one): eval mode under no_grad
    would otherwise be a second compilation, and a CUDA-graph capture per new shape, for a
    small share of the run's time.
    """
    model, task, loss, dist = p.network.raw, p.task, p.optim.loss, p.place.dist
    model.eval()
    if not dist.main:
        slow_examples = keep = 0
    sums: dict[str, torch.Tensor] = {}
    slow: dict[str, list[float]] = {}
    kept: list[dict[str, Any]] = []
    count = 0
    for batch in p.feed.valid_loader:
        inputs, target = task.pair(to_device(batch, p.place.device))
        with p.optim.precision.autocast():
            output = model(inputs)
            total, terms = loss(output, target)
            prediction = task.predict(model, inputs, output)
        n = len(next(iter(batch.values())))
        values = {"loss/total": total * n, **{f"loss/{k}": v * n for k, v in terms.items()}}
        values.update({k: v.sum() for k, v in task.metrics(prediction, inputs, target).items()})
        for key, value in values.items():
            sums[key] = sums.get(key, 0) + value.float()
        if count < slow_examples and task.slow:
            rows, since = slice(0, slow_examples - count), time.perf_counter()
            for key, scores in task.slow_metrics(prediction[rows], target[rows]).items():
                slow.setdefault(key, []).extend(scores)
            if spend is not None:
                spend("slow_metrics", time.perf_counter() - since)
        if count < keep:
            kept.extend(task.examples(inputs, prediction, target, keep - count))
        count += n
    sums["count"] = torch.tensor(float(count), device=p.place.device)
    sums = dist.sum(sums)
    count = sums.pop("count").item()
    out = task.summarise({k: v.item() / count for k, v in sums.items()})
    for key, scores in slow.items():  # NaN: PESQ found no utterance in that example
        if math.isfinite(mean := nan_mean(scores)):
            out[key] = mean
    return dist.broadcast(out), kept


@dataclass
class Validation:
    """Each epoch's validation: slow metrics every `slow_every` epochs, media (audio and
    spectrograms) every `media_every` epochs and after the first; logged to the val writer
    under the train writer's tag names (`loss/...`) or `metrics/...`."""

    cfg: ValidationConfig
    log: Logger

    def slow_examples(self, epoch: int) -> int:
        """How many examples get the slow metrics after `epoch` (1-based)."""
        return self.cfg.slow_examples if self.cfg.slow_every and epoch % self.cfg.slow_every == 0 else 0

    def media_examples(self, epoch: int) -> int:
        every = self.cfg.media_every
        return self.cfg.media_examples if every and (epoch % every == 0 or epoch == 1) else 0

    def run(self, p: Parts, epoch: int, spend: Callable[[str, float], None] | None = None):
        """Validate after `epoch` (1-based); returns the metrics and the kept examples."""
        return validate(p, self.slow_examples(epoch), self.media_examples(epoch), spend)

    def write(self, metrics: dict[str, float], examples: list, step: int, epoch: int, sample_rate: int) -> None:
        self.log.log({(k if k.startswith("loss/") else f"metrics/{k}"): x for k, x in metrics.items()}, step)
        if examples:  # inputs and targets once per run (the first validation), outputs each time
            self.log.media(examples, step, sample_rate, self.cfg.spectrogram, first=epoch == 1)
