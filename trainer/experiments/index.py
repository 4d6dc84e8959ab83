"""Every run under `outputs/`, kept in a SQLite index that is rebuilt from the run folders.

The run folders are the source of truth; the index (`<outputs>/.runs.sqlite`) is a cache
of what they say, so that listing, filtering and finding an experiment by its hash stay
fast with thousands of runs. `refresh` walks the tree (not into run folders), compares
each run folder's mtime with the indexed one and re-reads only folders that changed;
every file a run writes at its top level (experiment.json, history.json, summary.json)
is replaced atomically, which updates that mtime. A folder changed within the last two
seconds is re-read next time too (an mtime tick can hide a second write). A damaged or
foreign index file is deleted and rebuilt.

A run's status is its summary's, trusted only when the summary parses and names the same
experiment as `experiment.json`; otherwise the run is `incomplete` (to be resumed). A run
submitted to SLURM that has not started yet has only `slurm.json` (scheduler.py): it is
`submitted`, and its `job` is the SLURM job id.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import summary as run_summary
from trainer.files import read_json
from trainer.provenance import code_version

log = logging.getLogger(__name__)

EXPERIMENT = "experiment.json"
SLURM = "slurm.json"  # the run's SLURM job, recorded at submission (scheduler.py)
SWEEP = "sweep.json"  # a sweep's manifest (manifest.py)
INDEX = ".runs.sqlite"
SCHEMA = 3
FINISHED = ("completed", "early_stopped", "pruned")  # nothing left to train
RETRYABLE = ("failed", "diverged")  # rerun only on request (retry_failed=true)
INCOMPLETE = "incomplete"  # started, no trustworthy summary: resumed by a relaunch
SUBMITTED = "submitted"  # submitted to SLURM, not started: only the scheduler knows more
SKIP = {"cache", "tb", "checkpoints", "profile"}  # folders that never hold runs
VOLATILE_NS = 2_000_000_000

COLUMNS = (
    "path", "mtime_ns", "seen_ns", "hash", "grp", "alias", "seed", "status", "reason", "monitor", "objective",
    "best", "final", "samples_per_s", "train_seconds", "epochs", "steps", "code", "created", "job", "choices",
    "config", "metrics",
)  # fmt: skip


@dataclass
class Record:
    path: str  # relative to the index root (absolute when read outside one)
    hash: str | None = None
    grp: str | None = None
    alias: str = ""
    seed: int | None = None
    status: str = INCOMPLETE
    reason: str = ""
    monitor: str | None = None
    objective: float | None = None
    best: float | None = None
    final: float | None = None
    samples_per_s: float | None = None
    train_seconds: float | None = None
    epochs: int | None = None
    steps: int | None = None
    code: str | None = None
    created: float | None = None
    job: str | None = None  # the SLURM job id, when the run was submitted to SLURM
    choices: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _finite(tree: Any) -> Any:
    """JSON for SQLite's JSON functions, which refuse NaN and Infinity: those become null."""
    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_finite(v) for v in tree]
    return None if isinstance(tree, float) and not math.isfinite(tree) else tree


def read_run(run_dir: Path, name: str | None = None) -> Record:
    """What a run folder says about itself (see the module docstring for `status`)."""
    run_dir = Path(run_dir)
    record = Record(path=name if name is not None else str(run_dir), alias=run_dir.name)
    registered = read_json(run_dir / EXPERIMENT)
    registered = registered if isinstance(registered, dict) else {}
    slurm = read_json(run_dir / SLURM)
    slurm = slurm if isinstance(slurm, dict) else {}
    record.job = slurm.get("job_id") or None
    exp = registered.get("experiment")
    if exp is None and isinstance(slurm.get("experiment"), dict):  # submitted to SLURM, not started
        exp, record.status = slurm["experiment"], SUBMITTED
    if isinstance(exp, dict):
        record.hash, record.grp, record.seed = exp.get("hash"), exp.get("group"), exp.get("seed")
        record.alias = exp.get("alias") or record.alias
        record.choices = registered.get("choices") or {}
        record.config = registered.get("config") or {}
        record.created = _num(registered.get("created") or slurm.get("recorded"))
        record.code = code_version(registered.get("provenance"))
    s = run_summary.read(run_dir)
    if s is None:
        if (run_dir / run_summary.FILE).exists():
            record.reason = "summary.json is damaged or partial: not trusted"
        return record
    said = (s.get("experiment") or {}).get("hash")
    if record.hash is not None and said != record.hash:
        record.reason = "summary.json names another experiment: not trusted"
        return record
    record.hash = record.hash or said
    record.status, record.reason = str(s["status"]), s.get("reason") or ""
    record.monitor = s.get("monitor")
    for key in ("objective", "best", "final", "samples_per_s", "train_seconds"):
        setattr(record, key, _num(s.get(key)))
    record.epochs, record.steps = s.get("epochs"), s.get("steps")
    record.metrics = {k: v for k, v in (s.get("final_metrics") or {}).items() if _num(v) is not None}
    record.code = record.code or code_version(s.get("provenance"))
    return record


def scan(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    """({run folder: its mtime_ns}, {sweep folder: its sweep.json's mtime_ns}), paths
    relative to `root`. A run folder holds experiment.json or Hydra's `.hydra/`; a sweep
    folder holds sweep.json. Does not descend into run folders or hidden folders."""
    root = Path(root)
    runs: dict[str, int] = {}
    sweeps: dict[str, int] = {}
    stack = [str(root)]
    prefix = len(str(root)) + 1
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        names = {e.name for e in entries}
        try:
            if folder != str(root) and (EXPERIMENT in names or SLURM in names or ".hydra" in names):
                runs[folder[prefix:]] = os.stat(folder).st_mtime_ns
                continue
            if SWEEP in names:
                sweeps[folder[prefix:]] = os.stat(os.path.join(folder, SWEEP)).st_mtime_ns
        except OSError:
            continue
        for e in entries:
            if e.name[0] != "." and e.name not in SKIP and e.is_dir(follow_symlinks=False):
                stack.append(e.path)
    return runs, sweeps


def planned_aliases(sweep_dir: Path) -> list[tuple[str, str, str]]:
    """(alias, experiment hash, run folder) of every experiment a sweep.json lists: the
    names a sweep gave its runs, wherever those live."""
    data = read_json(Path(sweep_dir) / SWEEP)
    out = []
    for e in (data or {}).get("experiments", []) if isinstance(data, dict) else []:
        if isinstance(e, dict) and e.get("alias") and e.get("hash") and e.get("run_dir"):
            out.append((str(e["alias"]), str(e["hash"]), os.path.normpath(Path(sweep_dir) / e["run_dir"])))
    return out


class RunsIndex:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.file = self.root / INDEX
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):
            db = sqlite3.connect(self.file, timeout=60, isolation_level=None)
            try:
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA:
                    self._create(db)
                db.execute("SELECT count(*) FROM runs").fetchone()
                return db
            except sqlite3.DatabaseError:
                db.close()
                if attempt:
                    raise
                # a cache, rebuilt from the folders: a damaged one is replaced, not repaired
                log.warning("%s is damaged; rebuilding it from the run folders", self.file)
                self.file.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("DROP TABLE IF EXISTS runs")
        db.execute(
            "CREATE TABLE runs (path TEXT PRIMARY KEY, mtime_ns INTEGER, seen_ns INTEGER, hash TEXT, grp TEXT, "
            "alias TEXT, seed INTEGER, status TEXT, reason TEXT, monitor TEXT, objective REAL, best REAL, final REAL, "
            "samples_per_s REAL, train_seconds REAL, epochs INTEGER, steps INTEGER, code TEXT, created REAL, job TEXT, "
            "choices TEXT, config TEXT, metrics TEXT)"
        )
        db.execute("CREATE INDEX runs_hash ON runs (hash)")
        # the names each sweep planned its runs under (sweep.json), for lookups by them
        db.execute("DROP TABLE IF EXISTS sweeps")
        db.execute("DROP TABLE IF EXISTS aliases")
        db.execute("CREATE TABLE sweeps (path TEXT PRIMARY KEY, mtime_ns INTEGER)")
        db.execute("CREATE TABLE aliases (sweep TEXT, alias TEXT, hash TEXT, run TEXT)")
        db.execute("CREATE INDEX aliases_alias ON aliases (alias)")
        db.execute(f"PRAGMA user_version = {SCHEMA}")
        db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def refresh(self) -> RunsIndex:
        """Bring the index up to date with the folders; returns self."""
        found, sweeps = scan(self.root)
        known = {p: (m, s) for p, m, s in self.db.execute("SELECT path, mtime_ns, seen_ns FROM runs")}
        now = time.time_ns()
        changed = [p for p, m in found.items() if p not in known or known[p][0] != m or known[p][1] - m < VOLATILE_NS]
        gone = [p for p in known if p not in found]
        known_sweeps = dict(self.db.execute("SELECT path, mtime_ns FROM sweeps"))
        stale = [p for p in set(known_sweeps) | set(sweeps) if known_sweeps.get(p) != sweeps.get(p)]
        if not changed and not gone and not stale:
            return self
        names = [
            (sweep, alias, hash_, self._relative(run))
            for sweep in stale
            if sweep in sweeps
            for alias, hash_, run in planned_aliases(self.root / sweep)
        ]
        rows = []
        for path in changed:
            r = read_run(self.root / path, name=path)
            rows.append(
                (path, found[path], now, r.hash, r.grp, r.alias, r.seed, r.status, r.reason, r.monitor, r.objective,
                 r.best, r.final, r.samples_per_s, r.train_seconds, r.epochs, r.steps, r.code, r.created, r.job,
                 json.dumps(_finite(r.choices)), json.dumps(_finite(r.config)), json.dumps(_finite(r.metrics)))
            )  # fmt: skip
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("DELETE FROM runs WHERE path = ?", [(p,) for p in gone])
            self.db.executemany(f"INSERT OR REPLACE INTO runs VALUES ({','.join('?' * len(COLUMNS))})", rows)
            self.db.executemany("DELETE FROM aliases WHERE sweep = ?", [(p,) for p in stale])
            self.db.executemany("DELETE FROM sweeps WHERE path = ?", [(p,) for p in stale])
            self.db.executemany("INSERT INTO sweeps VALUES (?, ?)", [(p, sweeps[p]) for p in stale if p in sweeps])
            self.db.executemany("INSERT INTO aliases VALUES (?, ?, ?, ?)", names)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self

    def _relative(self, path: str | Path) -> str:
        """A folder as the index keys it: relative to the root when inside it."""
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def _records(self, sql: str, params: list[Any], full: bool = False) -> list[Record]:
        """Rows as Records; the config (the bulk of a row) only when `full`."""
        names = [c for c in COLUMNS if c not in ("mtime_ns", "seen_ns") and (full or c != "config")]
        out = []
        for row in self.db.execute(f"SELECT {', '.join(names)} FROM runs {sql}", params):
            values = dict(zip(names, row))
            for key in ("choices", "config", "metrics"):
                values[key] = json.loads(values.get(key) or "{}")
            out.append(Record(**values))
        return out

    def find(self, experiment_hash: str) -> list[Record]:
        """The runs of one experiment, the most useful first: finished, then resumable,
        then failed; newest first within each."""
        rank = {s: 0 for s in FINISHED} | {s: 2 for s in RETRYABLE}
        runs = self._records("WHERE hash = ?", [experiment_hash])
        return sorted(runs, key=lambda r: (rank.get(r.status, 1), -(r.created or 0)))

    def select(
        self,
        status: list[str] | None = None,
        where: list[str] | None = None,
        metric: list[str] | None = None,
        sort: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """Runs filtered in SQL: `status` in a list; `where` `key=value` on a group choice
        (`optim=sgd`) or a config key (`optim.lr=0.001`); `metric` `name<op>number` on a
        summary figure or a final validation metric (`si_sdri>=8`, `samples_per_s>100`)."""
        clauses, params = [], []
        if status:
            clauses.append(f"status IN ({','.join('?' * len(status))})")
            params += status
        for item in where or []:
            key, op, value = _split(item, ("!=", "="))
            column = "choices" if "." not in key else "config"
            clauses.append(f"json_extract({column}, ?) {'IS NOT' if op == '!=' else 'IS'} ?")
            params += [_json_path(key), _sql_value(value)]
        for item in metric or []:
            key, op, value = _split(item, (">=", "<=", "!=", ">", "<", "="))
            clauses.append(f"{_metric_sql(key)} {op} ?")
            params += ([] if key in _FIGURES else [_json_path(key)]) + [float(value)]
        sql = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        if sort:
            descending = sort.startswith("-")
            key = sort.lstrip("-+")
            sql += f" ORDER BY {_metric_sql(key)} IS NULL, {_metric_sql(key)} {'DESC' if descending else 'ASC'}"
            params += [] if key in _FIGURES else [_json_path(key), _json_path(key)]
        else:
            sql += " ORDER BY path"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self._records(sql, params)

    def lookup(self, ref: str) -> Record:
        """One run by folder path, hash prefix or alias; ValueError names what is ambiguous."""
        path = Path(ref).expanduser()
        try:
            is_dir = path.is_dir()
        except OSError:  # not a path at all (a long list of overrides)
            is_dir = False
        if is_dir:
            try:
                rel = str(path.resolve().relative_to(self.root.resolve()))
                hit = self._records("WHERE path = ?", [rel], full=True)
                if hit:
                    return hit[0]
            except ValueError:
                pass
            return read_run(path)
        hits = self._records(
            "WHERE hash LIKE ? OR alias = ? OR path = ? OR path IN (SELECT run FROM aliases WHERE alias = ?)",
            [f"{ref}%", ref, ref, ref],
            full=True,
        )
        return self._one(ref, hits)

    def _one(self, ref: str, hits: list[Record]) -> Record:
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise ValueError(f"{ref}: no run folder, hash prefix or alias matches under {self.root}")
        names = ", ".join(r.path for r in hits[:6])
        raise ValueError(f"{ref}: {len(hits)} runs match ({names}{', ...' if len(hits) > 6 else ''}); give a path")

    def experiment(self, experiment_hash: str, ref: str) -> Record:
        """The most useful run of an experiment (`find`), named `ref` in errors."""
        hits = self.find(experiment_hash)
        if not hits:
            raise ValueError(f"{ref}: experiment {experiment_hash[:10]} has no run under {self.root}")
        return self._records("WHERE path = ?", [hits[0].path], full=True)[0]

    def planned(self, sweep: Path) -> dict[str, str]:
        """{run folder: the alias a sweep planned it under} for the sweep folder `sweep`."""
        key = self._relative(sweep)
        return dict(self.db.execute("SELECT run, alias FROM aliases WHERE sweep = ?", [key]))


_FIGURES = {"objective", "best", "final", "samples_per_s", "train_seconds", "epochs", "steps", "seed", "created"}


def _metric_sql(key: str) -> str:
    return key if key in _FIGURES else "json_extract(metrics, ?)"


def _json_path(key: str) -> str:
    return "$" + "".join(f'."{part}"' for part in key.split("."))


def _split(item: str, ops: tuple[str, ...]) -> tuple[str, str, str]:
    for op in ops:
        if op in item:
            key, value = item.split(op, 1)
            if key.strip():
                return key.strip(), op, value.strip()
    raise ValueError(f"{item!r}: expected key{ops[-1]}value")


def _sql_value(text: str) -> Any:
    """A filter value as YAML reads it (`0.001`, `true`, `sgd`), as SQLite's JSON stores it."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, (int, float, str)) or value is None else json.dumps(value)
