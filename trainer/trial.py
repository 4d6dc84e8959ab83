"""The job's side of an Optuna search: report each validation to the trial, let the pruner
stop it, and leave the run's outcome in the trial's user attributes for the sweeper.

The sweeper (sweeps/plugins/hydra_plugins/trainer_optuna_sweeper) passes the storage URL, study
name and trial id as `optuna.*` overrides; a run without them has no link and pays nothing.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Any

log = logging.getLogger("trainer")


@functools.cache
def _storage_class():
    import optuna
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy import func, orm

    class Storage(RDBStorage):
        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            grace = self.grace_period or 2 * self.heartbeat_interval
            stale = []
            with _create_scoped_session(self.scoped_session, True) as session:
                now = session.execute(func.now()).scalar().replace(tzinfo=None)
                running = (
                    session.query(models.TrialModel)
                    .options(orm.selectinload(models.TrialModel.heartbeats))
                    .filter(models.TrialModel.state == optuna.trial.TrialState.RUNNING)
                    .filter(models.TrialModel.study_id == study_id)
                    .all()
                )
                for trial in running:
                    if trial.heartbeats and (now - trial.heartbeats[0].heartbeat).total_seconds() > grace:
                        stale.append(trial.trial_id)
            return stale

    return Storage


def _write_ahead_log(engine) -> None:
    """SQLite in WAL mode with synchronous=NORMAL: a commit no longer waits for an fsync
    (a trial's bookkeeping is ~10 commits, ~3 ms each otherwise), readers do not block
    the writer, and a crash can lose the last commits but never corrupt the file."""
    from sqlalchemy import event

    def pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened during set-up are replaced by ones with the pragmas


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None):
    """An Optuna RDB storage for `url`, with what long searches on shared machines need:
    a busy timeout for SQLite (several workers write to one file), heartbeats, and stale
    detection that counts days (Optuna 2.10 compares `timedelta.seconds`, which wraps
    every 24 hours, so a trial killed two days ago would look fresh)."""
    from sqlalchemy.pool import QueuePool

    sqlite = url.startswith("sqlite")
    # SQLite: keep connections (SQLAlchemy 1.4 opens a new one per session for files) and
    # wait up to a minute for another worker's write lock instead of failing.
    engine_kwargs = (
        {"poolclass": QueuePool, "connect_args": {"timeout": 60, "check_same_thread": False}}
        if sqlite
        else {"pool_pre_ping": True}
    )
    for attempt in range(5):
        try:
            storage = _storage_class()(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period
            )
            if sqlite:
                _write_ahead_log(storage.engine)
            return storage
        except Exception as err:  # noqa: PERF203
            # Workers started together race to create the schema of a new database: the
            # loser's version insert, or its `CREATE TABLE alembic_version`, fails once the
            # winner's is in; a retry finds the schema ready. Anything else fails again.
            text = type(err).__name__ + repr(err)
            if attempt == 4 or not ("IntegrityError" in text or "already exists" in text):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class TrialLink:
    """Reports validations to one trial and asks its pruner whether to stop."""

    def __init__(self, cfg):
        import optuna
        from hydra.utils import instantiate

        pruner = instantiate(cfg.pruner) if cfg.pruner else optuna.pruners.NopPruner()
        self.study = optuna.load_study(study_name=cfg.study_name, storage=open_storage(cfg.storage), pruner=pruner)
        self.trial = optuna.trial.Trial(self.study, cfg.trial_id)
        self.number = cfg.trial_number
        # Optuna cannot prune multi-objective trials (Trial.report raises for them).
        self.can_prune = len(self.study.directions) == 1

    def report(self, step: int, value: float) -> bool:
        """Report the monitored value at `step` (an epoch); True when the pruner says stop."""
        if not self.can_prune or not math.isfinite(value):
            return False
        self.trial.report(value, step)
        return self.trial.should_prune()

    def finish(self, summary: dict[str, Any], run_dir: str) -> None:
        """The outcome, for the sweeper to tell the study (and for anyone reading it)."""
        for key, value in (("status", summary["status"]), ("reason", summary["reason"]), ("run_dir", run_dir)):
            self.trial.set_user_attr(key, value)
        for key in ("samples_per_s", "step_ms", "train_seconds", "epochs"):
            if isinstance(summary.get(key), (int, float)):
                self.trial.set_user_attr(key, summary[key])

    def value(self, summary: dict[str, Any], key: str, index: int) -> float:
        """`summary[key]` as the study's objective number `index`; the worst value for that
        direction when it is missing or not finite (a sweeper never sees NaN)."""
        import optuna

        value = summary.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        maximize = self.study.directions[index] == optuna.study.StudyDirection.MAXIMIZE
        return -math.inf if maximize else math.inf
