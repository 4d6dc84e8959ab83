"""Every use of Optuna's private API in the project, in one place: the RDB storage with
the fixes long searches need (`open_storage`), and the storage calls a study does not
expose publicly (trial ids, attributes and states of trials other than the current one,
heartbeats). Written against Optuna 2.10's storage API."""

from __future__ import annotations

import functools
import time
from typing import Any


def trial_id(trial) -> int:
    """The storage's id of a trial (Trial and FrozenTrial keep it private)."""
    return trial._trial_id


def set_user_attr(study, trial_id: int, key: str, value: Any) -> None:
    study._storage.set_trial_user_attr(trial_id, key, value)


def set_system_attr(study, trial_id: int, key: str, value: Any) -> None:
    study._storage.set_trial_system_attr(trial_id, key, value)


def fail(study, trial_id: int) -> None:
    """Mark a trial that is not this process's own as FAIL."""
    from optuna.trial import TrialState

    study._storage.set_trial_state(trial_id, TrialState.FAIL)


def number(study, trial_id: int) -> int:
    return study._storage.get_trial(trial_id).number


def record_heartbeat(study, trial_id: int) -> None:
    study._storage.record_heartbeat(trial_id)


def stale_trial_ids(storage, study) -> list[int]:
    """RUNNING trials of `study` whose heartbeat is older than the storage's grace period."""
    return storage._get_stale_trial_ids(study._study_id)


def suggest(trial, name: str, distribution) -> Any:
    """Draw one parameter from an Optuna distribution object (what the released sweeper
    parses the search space into)."""
    return trial._suggest(name, distribution)


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
