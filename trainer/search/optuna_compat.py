"""Every use of Optuna's private API in the project, in one place: the storage with what
long searches need (`open_storage`: RDB or journal), and the storage calls a study does
not expose publicly (trial ids, attributes and states of trials other than the current
one, heartbeats). Written against Optuna 4.9's storage API."""

from __future__ import annotations

import functools
import time
import warnings
from pathlib import Path
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

    study._storage.set_trial_state_values(trial_id, TrialState.FAIL)


def number(study, trial_id: int) -> int:
    return study._storage.get_trial(trial_id).number


def record_heartbeat(study, trial_id: int) -> None:
    study._storage.record_heartbeat(trial_id)


def stale_trial_ids(storage, study) -> list[int]:
    """RUNNING trials of `study` whose heartbeat is older than the storage's grace period."""
    return storage._get_stale_trial_ids(study._study_id)


def modern(distribution):
    """The distribution in Optuna 3+'s classes. The released sweeper still builds the
    deprecated ones (LogUniformDistribution, ...); an upgraded study holds their
    replacements (FloatDistribution, ...), and Optuna refuses to mix the two kinds under
    one parameter name."""
    from optuna.distributions import _convert_old_distribution_to_new_distribution

    return _convert_old_distribution_to_new_distribution(distribution)


def distribution_key(distribution) -> str:
    """A distribution as JSON, to compare search spaces."""
    from optuna.distributions import distribution_to_json

    return distribution_to_json(modern(distribution))


def ask(study):
    """study.ask without Optuna's warning that heartbeats are meant for Study.optimize: the
    sweeper asks and tells, and beats for its trials itself (one line at the start says so)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return study.ask()


def suggest(trial, name: str, distribution) -> Any:
    """Draw one parameter from an Optuna distribution object (what the released sweeper
    parses the search space into)."""
    return trial._suggest(name, distribution)


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


JOURNAL = "journal://"


@functools.cache
def _journal_class():
    from optuna.storages import JournalStorage
    from optuna.trial import TrialState

    class JournalWithHeartbeat(JournalStorage):
        """Optuna's journal storage (one append-only file, no server) has no heartbeats:
        this records them as a trial system attribute and finds stale RUNNING trials the
        way the RDB storage does (no beat for `grace_period`; a trial that never beat
        counts from its start)."""

        heartbeat_interval: int | None = None
        grace_period: int | None = None

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, "heartbeat", time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            grace = self.grace_period or 2 * (self.heartbeat_interval or 60)
            now = time.time()
            running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            last = {t._trial_id: t.system_attrs.get("heartbeat", t.datetime_start.timestamp()) for t in running}
            return [trial_id for trial_id, beat in last.items() if now - beat > grace]

    return JournalWithHeartbeat


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None):
    """An Optuna storage for `url`: `journal:///path/to/file.log` (a journal file, for many
    workers on a shared filesystem without a database server) or an RDB URL (SQLite,
    PostgreSQL, MySQL), with what long searches on shared machines need: a busy timeout
    for SQLite (several workers write to one file), WAL mode, and heartbeats."""
    if url.startswith(JOURNAL):
        path = url[len(JOURNAL) :]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        # the open(O_CREAT | O_EXCL) lock also works on NFS, where symlink locks may not
        storage = _journal_class()(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        storage.heartbeat_interval, storage.grace_period = heartbeat_interval, grace_period
        return storage
    import optuna
    from optuna.storages import RDBStorage
    from sqlalchemy.pool import QueuePool

    sqlite = url.startswith("sqlite")
    # SQLite: keep connections (SQLAlchemy opens a new one per session for files) and wait
    # up to a minute for another worker's write lock instead of failing. Other servers:
    # check a pooled connection before use, and give up on an unreachable host in 10 s.
    engine_kwargs = (
        {"poolclass": QueuePool, "connect_args": {"timeout": 60, "check_same_thread": False}}
        if sqlite
        else {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10} if url.startswith("postgres") else {}}
    )
    for attempt in range(5):
        try:
            with (
                warnings.catch_warnings()
            ):  # heartbeats are "experimental" since Optuna 2.9; this project relies on them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(
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
