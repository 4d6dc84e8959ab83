"""Where metrics go: TensorBoard (a `train/` and a `val/` writer with the same tag names,
so each chart overlays the two curves), the console, or nowhere."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("trainer")


class Logger:
    """The whole protocol: scalars at a step, then close."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def media(self, examples: list, step: int, sample_rate: int, kind: str, first: bool) -> None:
        """Audio and spectrograms of validation examples (input/output/target tensors)."""

    def histograms(self, values: Mapping[str, object], step: int) -> None:
        """Value distributions (weights, gradients), each a 1-D tensor."""

    def hparams(self, hparams: Mapping[str, float | int | str | bool], metrics: Mapping[str, float]) -> None:
        """The run's hyperparameters and final metrics, for TensorBoard's HParams view."""

    def close(self) -> None:
        pass


class NullLogger(Logger):
    pass


class TensorBoardLogger(Logger):
    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imported here: ~0.5 s

        # purge_step: on resume, points logged after the checkpoint by the killed process
        # are hidden, so no step appears twice.
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def histograms(self, values: Mapping[str, object], step: int) -> None:
        for tag, tensor in values.items():
            self.writer.add_histogram(tag, tensor, step)

    def media(self, examples: list, step: int, sample_rate: int, kind: str, first: bool) -> None:
        from trainer.loop.media import log_examples  # matplotlib: imported only when used

        log_examples(self.writer, examples, step, sample_rate, kind, first)

    def hparams(self, hparams: Mapping[str, float | int | str | bool], metrics: Mapping[str, float]) -> None:
        """One HParams-dashboard session in this writer's own run (no extra sub-folder,
        unlike SummaryWriter.add_hparams), so the table links to this run's curves."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        exp, ssi, sei = hparams_summaries(dict(hparams), dict(metrics))
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def read_scalars(event_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series of one writer's directory, as TensorBoard would show them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class Progress:
    """A tqdm bar over optimizer steps on a terminal; plain log lines otherwise."""

    def __init__(self, kind: str, total: int, initial: int):
        self.bar = None
        if kind == "bar" or (kind == "auto" and sys.stderr.isatty()):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)
        self.quiet = kind == "none"

    def update(self, step: int, epoch: int, values: Mapping[str, float]) -> None:
        """Called at log cadence only (values are already on the host)."""
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_description(f"epoch {epoch}")
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=True)
        elif not self.quiet:
            text = " ".join(f"{k} {v:.4g}" for k, v in values.items())
            log.info("epoch %d step %d %s", epoch, step, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
