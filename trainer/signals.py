"""Graceful stop on SIGTERM / SIGINT: what a cluster sends before preemption (SLURM sends
SIGTERM, then SIGKILL after `KillWait`, 30 s by default) and what Ctrl-C sends.

The handler only sets a flag; the loop checks it after each optimizer step, writes `last`,
and the process exits with 128 + the signal number (143 for SIGTERM, 130 for SIGINT, as a
shell reports a killed command), after the summary says `interrupted`. Relaunching the same
command resumes exactly. A second signal while stopping takes the default action at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger("trainer")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """Raised after the checkpoint is written; carries the state and the exit status."""

    def __init__(self, state, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.state, self.signum = state, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class GracefulStop:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def requested(self) -> bool:
        return self.signum is not None

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
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
