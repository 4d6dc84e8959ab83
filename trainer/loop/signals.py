"""Graceful stop on SIGTERM / SIGINT / SIGUSR2: what a cluster sends before preemption
(SLURM sends SIGTERM, then SIGKILL after `KillWait`, 30 s by default), what Ctrl-C sends, and
what submitit (and `sbatch --signal=USR2@90`) sends ahead of a time limit or preemption.

The handler only sets a flag; the loop checks it after each optimizer step, writes `last`,
and the process exits with 128 + the signal number (143 for SIGTERM, 130 for SIGINT, as a
shell reports a killed command), after the summary says `interrupted`. Relaunching the same
command resumes exactly. A second signal while stopping takes the default action at once.

Under a submitit job (`hydra/launcher=slurm`, `submitit_slurm` or `submitit_local`),
submitit's own SIGUSR2 handler is kept as `requeue`: after a SIGUSR2 (the time-limit or
preemption warning), once `last` is written, the run hands over to it, and submitit
resubmits the same job (same overrides, same run directory), which resumes. A SIGTERM
(`scancel`) stops the run without a requeue.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger("trainer")

# submitit's preemption/time-limit signal, configurable there with SUBMITIT_PREEMPT_SIGNAL
PREEMPT = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
SIGNALS = (signal.SIGTERM, signal.SIGINT, PREEMPT)


class Interrupted(Exception):
    """Raised after the checkpoint is written; carries the state and the exit status."""

    def __init__(self, state, signum: int, requeue=None):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.state, self.signum = state, signum
        # the launcher's requeue handler (submitit), on its own signal only: SIGTERM is what
        # `scancel` sends (a requeue would undo it), and where SLURM preempts with
        # PreemptMode=REQUEUE it requeues the job itself; Ctrl-C is never requeued
        self.requeue = requeue if signum == PREEMPT else None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class GracefulStop:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self.requeue = None  # a Python handler that was on PREEMPT before us (submitit's)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def agreed(self, dist) -> bool:
        """Data-parallel runs stop together: true on every rank once any rank got a signal
        (torchrun forwards SIGTERM to each worker, not necessarily before the same step)."""
        # the verdict, not the flag: a signal landing during the all-reduce waits for the next step
        agreed = dist.any(self.requested)
        if agreed and self.signum is None:
            self.signum = signal.SIGTERM  # another rank received it
        return agreed

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        log.warning("%s received: finishing the current step, then saving a checkpoint", signal.Signals(signum).name)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            if callable(self._previous[PREEMPT]):
                self.requeue = self._previous[PREEMPT]
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
