"""The sweep loop of `hydra/sweeper=trainer_optuna` (see sweeper.py). It imports Optuna,
so it is kept out of the plugin module that Hydra imports in every run: a run that does
not search pays nothing for it (about 2 s of start-up)."""

# No `from __future__ import annotations`: see sweeper.py.
import functools
import logging
import math
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.core.utils import JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import TrialState

from trainer import summary
from trainer.search import optuna_compat as compat
from trainer.search.optuna_compat import open_storage

log = logging.getLogger("hydra_plugins.trainer_optuna_sweeper.sweeper")

WORKER = f"{socket.gethostname()}:{os.getpid()}"
EXCLUDED = ("stale", "duplicate_of", "surplus", "aborted")  # user attrs of FAIL trials that do not count


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial uses up the budget: killed, duplicate and surplus draws do not."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not any(k in trial.user_attrs for k in EXCLUDED)


class Heartbeat:
    """Records a heartbeat for the trials in flight until stopped (a daemon thread)."""

    def __init__(self, storage, trial_ids: list[int], interval: int):
        self.storage, self.trial_ids, self.interval = storage, trial_ids, interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.done.wait(self.interval):
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as err:  # a missed beat must not kill the sweep
                    log.warning("heartbeat for trial id %s failed: %s", trial_id, err)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def tell(study: optuna.Study, trial, **kwargs) -> None:
    """study.tell, minus one complaint: a grid sampler calls `study.stop()` once the grid is
    done, which Optuna allows only inside `study.optimize` (the state is stored before)."""
    try:
        study.tell(trial, **kwargs)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


def grid_choices(name: str, distribution) -> list:
    """The grid sampler's values for one dimension: every choice, or every step of an int
    or stepped float interval, both ends included."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        n = int(round((distribution.high - distribution.low) / distribution.step)) + 1
        return [distribution.low + i * distribution.step for i in range(n)]
    raise ValueError(
        f"hydra.sweeper.params.{name}: hydra/sweeper/sampler=grid needs discrete values "
        "(choice(...), int(interval(...)) or a stepped interval), not a continuous range"
    )


def check_search_space(study: optuna.Study, distributions: dict) -> None:
    """Refuse a search space that differs from the one the study was begun with (Optuna
    would mix the two silently, or fail one trial at a time); record it on a new study."""
    from optuna.distributions import json_to_distribution

    space = {name: compat.distribution_key(d) for name, d in sorted(distributions.items())}
    stored = study.user_attrs.get("search_space")
    if stored is None:  # a study begun before the check: the space of its latest trial
        earlier = [t for t in study.get_trials(deepcopy=False) if t.distributions]
        if earlier:
            stored = {name: compat.distribution_key(d) for name, d in sorted(earlier[-1].distributions.items())}
    if stored is not None and stored != space:

        def show(js):
            return repr(json_to_distribution(js)) if js else "(absent)"

        changed = [
            f"{name}: {show(stored.get(name))} -> {show(space.get(name))}"
            for name in sorted(set(stored) | set(space))
            if stored.get(name) != space.get(name)
        ]
        raise ValueError(
            f"study {study.study_name!r} was begun with another search space ({'; '.join(changed)}). "
            f"Start a new study for the new space (hydra.sweeper.study_name={study.study_name}_v2) "
            "or restore the old one."
        )
    if "search_space" not in study.user_attrs:
        study.set_user_attr("search_space", space)


class ResilientSweeperImpl(OptunaSweeperImpl):
    def __init__(self, *args, heartbeat_interval: int, grace_period: int, max_duplicate_draws: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.max_duplicate_draws = max_duplicate_draws

    # -- study bookkeeping ------------------------------------------------------------
    def _fail_stale(self, study: optuna.Study, storage) -> None:
        stale = compat.stale_trial_ids(storage, study)
        for trial_id in stale:
            compat.set_user_attr(study, trial_id, "stale", True)
            compat.set_user_attr(
                study, trial_id, "reason", f"no heartbeat for over {self.grace_period} s: its sweeper or job was killed"
            )
            compat.fail(study, trial_id)
        if stale:
            numbers = sorted(compat.number(study, i) for i in stale)
            log.warning("marked %d stale RUNNING trial(s) as FAIL: %s", len(stale), numbers)

    def _in_budget(self, study: optuna.Study) -> int:
        trials = study.get_trials(deepcopy=False)
        return sum(counted(t) for t in trials) + sum(t.state == TrialState.RUNNING for t in trials)

    def _ask(self, study, distributions, fixed) -> Optional[optuna.trial.Trial]:
        """A trial with a parameter set not tried before, or None when the budget is spent."""
        for _ in range(self.max_duplicate_draws + 1):
            trial = compat.ask(study)
            compat.record_heartbeat(study, compat.trial_id(trial))
            previous = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
            if sum(counted(t) or t.state == TrialState.RUNNING for t in previous) >= self.n_trials:
                # another worker took the last slot between our count and our ask
                compat.set_user_attr(study, compat.trial_id(trial), "surplus", True)
                tell(study, trial, state=TrialState.FAIL)
                return None
            try:
                # The released _configure_trials also copies every fixed override into a
                # user attribute: one database commit each, per trial; the run directory's
                # .hydra/overrides.yaml already records them.
                for name, distribution in distributions.items():
                    compat.suggest(trial, name, distribution)
                if self.custom_search_space_extender:
                    self.custom_search_space_extender(self.config, trial)
            except ValueError as err:  # e.g. a parameter's distribution changed since the study began
                compat.set_user_attr(study, compat.trial_id(trial), "aborted", str(err))
                tell(study, trial, state=TrialState.FAIL)
                raise ValueError(
                    f"study {study.study_name!r}: this search space does not fit the trials already in it ({err}). "
                    "Start a new study (hydra.sweeper.study_name=...) or restore the search space."
                ) from None
            twin = next(
                (t for t in previous if t.params and t.params == trial.params and "duplicate_of" not in t.user_attrs),
                None,
            )
            if twin is None:
                return trial
            compat.set_user_attr(study, compat.trial_id(trial), "duplicate_of", twin.number)
            tell(study, trial, state=TrialState.FAIL)
            log.info("trial %d repeated trial %d's parameters; drawing again", trial.number, twin.number)
        raise RuntimeError(
            f"{self.max_duplicate_draws + 1} draws in a row repeated tried parameters: the search space looks exhausted"
        )

    def _link(self, study: optuna.Study, trial: optuna.trial.Trial) -> list[str]:
        """The overrides that tell a job which trial it is."""
        return [
            f"optuna.storage='{self.storage}'",
            f"optuna.study_name='{study.study_name}'",
            f"optuna.trial_id={compat.trial_id(trial)}",
            f"optuna.trial_number={trial.number}",
        ]

    @staticmethod
    def _outcome(ret) -> dict[str, Any]:
        """The job's summary.json. Read from the run directory rather than from the
        trial's user attributes: this process's Optuna storage caches trials, and the
        job wrote those attributes from another process."""
        try:
            run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
        except AttributeError:
            return {}
        return summary.read(run_dir) or {}

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret, n_directions: int) -> bool:
        """Record one job's outcome; returns True when it counts as a failure."""
        outcome = self._outcome(ret)
        status = outcome.get("status")
        if ret.status == JobStatus.FAILED:
            err = ret._return_value
            reason = f"{type(err).__name__}: {err}"
            compat.set_user_attr(study, compat.trial_id(trial), "reason", reason)
            tell(study, trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, reason)
            return True
        if status == "pruned":
            tell(study, trial, state=TrialState.PRUNED)
            log.info("trial %d pruned: %s", trial.number, outcome.get("reason"))
            return False
        values = ret.return_value if n_directions > 1 else [ret.return_value]
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            values = []
        if status == "diverged" or len(values) != n_directions or not all(math.isfinite(v) for v in values):
            reason = outcome.get("reason") or f"returned {ret.return_value!r}"
            compat.set_user_attr(study, compat.trial_id(trial), "reason", reason)
            tell(study, trial, state=TrialState.FAIL)
            log.warning("trial %d failed (%s): %s", trial.number, status or "bad value", reason)
            return True
        tell(study, trial, state=TrialState.COMPLETE, values=values)
        return False

    def _open_study(self, directions: list[str]):
        """The storage and the study, or an error naming `hydra.sweeper.storage` before any
        trial starts (a malformed URL, an unreachable server, a missing driver, a schema
        from an older Optuna)."""
        url = str(self.storage)
        try:
            if url.startswith("sqlite:///"):
                Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
            storage = open_storage(url, self.heartbeat_interval, self.grace_period)
            with warnings.catch_warnings():  # "heartbeat is supposed to be used with Study.optimize": ask/tell here
                warnings.simplefilter("ignore", UserWarning)
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=storage,
                    sampler=self.sampler,
                    directions=directions,
                    load_if_exists=True,
                )
        except Exception as err:
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "storage upgrade" in str(err):
                raise ValueError(
                    f"hydra.sweeper.storage={url}: this study storage was written by an older Optuna. Back it up, "
                    f"then upgrade it once: optuna storage upgrade --storage '{url}' (docs/guide/search.md, "
                    "'Studies from Optuna 2.10')"
                ) from None
            raise ValueError(
                f"hydra.sweeper.storage={url}: cannot open the study storage ({type(err).__name__}: {text}). "
                "Expected sqlite:///<path>.db, postgresql://<user>@<host>/<database> or journal:///<path>.log"
            ) from None
        return storage, study

    # -- the loop -------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        self._process_searchspace_config()
        with warnings.catch_warnings():
            # the released parser builds Optuna 2's distribution classes (a FutureWarning
            # each), which compat.modern converts to the current ones right here
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*Distribution")
            distributions, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + list(arguments))
            for name in fixed:
                distributions.pop(name, None)
            distributions = {name: compat.modern(d) for name, d in distributions.items()}
        if isinstance(self.sampler, functools.partial):  # hydra/sweeper/sampler=grid
            grid = {name: grid_choices(name, d) for name, d in distributions.items()}
            self.sampler = self.sampler(grid)
            size = math.prod(len(v) for v in grid.values())
            if self.n_trials > size:
                log.info("the grid has %d points: n_trials %d -> %d", size, self.n_trials, size)
                self.n_trials = size
        directions = self._get_directions()
        if self.config.get("dry_run", False):
            self._dry_run(Path(str(self.config.hydra.sweep.dir)))
            return
        storage, study = self._open_study(directions)
        check_search_space(study, distributions)
        self._fail_stale(study, storage)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        done = sum(counted(t) for t in study.get_trials(deepcopy=False))
        if done:
            self.sampler.reseed_rng()  # a resumed sampler must not replay the first invocation's draws
        log.info(
            "study %r in %s: %d of %d trials done, sampler %s, directions %s; a heartbeat every %d s for the "
            "trials in flight (a RUNNING trial silent for %d s is failed at the next start)",
            study.study_name,
            self.storage,
            done,
            self.n_trials,
            type(self.sampler).__name__,
            directions,
            self.heartbeat_interval,
            self.grace_period,
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        # resolved, for `python -m sweeps.report <sweep dir>` and for people
        OmegaConf.save(
            OmegaConf.create(
                {
                    "storage": str(self.storage),
                    "study_name": study.study_name,
                    "n_trials": self.n_trials,
                    "directions": directions,
                }
            ),
            sweep_dir / "study.yaml",
        )
        if hasattr(self.launcher, "submit"):  # hydra/launcher=slots: no batch barrier
            self._sweep_as_slots_free(study, storage, distributions, fixed, len(directions))
        else:
            self._sweep_in_batches(study, storage, distributions, fixed, len(directions))
        self._save_results(study, directions)

    def _next(self, study, distributions, fixed) -> Optional[tuple]:
        """A new trial and its job's overrides, or None when the budget is spent."""
        start = time.perf_counter()
        trial = self._ask(study, distributions, fixed)
        if trial is None:
            return None
        # the search's own cost for this trial (sampling, storage), beside the job's
        compat.set_system_attr(study, compat.trial_id(trial), "sampler_seconds", time.perf_counter() - start)
        # which worker ran it: several sweepers may share one study
        compat.set_system_attr(study, compat.trial_id(trial), "worker", WORKER)
        overrides = tuple(f"{k}={v}" for k, v in {**trial.params, **fixed}.items()) + tuple(self._link(study, trial))
        return trial, overrides

    def _check_failures(self, failures: int) -> None:
        if failures > self.max_failure_rate * self.n_trials:
            raise RuntimeError(
                f"{failures} failed trials in this sweep, more than max_failure_rate={self.max_failure_rate} "
                f"x n_trials={self.n_trials}; the study keeps them (see their 'reason' user attribute)"
            )

    def _sweep_in_batches(self, study, storage, distributions, fixed, n_directions: int) -> None:
        """n_jobs trials at a time; the next batch starts when the whole batch has ended."""
        failures = 0
        while True:
            slots = min(self.n_jobs, self.n_trials - self._in_budget(study))
            if slots <= 0:
                break
            asked = [t for t in (self._next(study, distributions, fixed) for _ in range(slots)) if t is not None]
            if not asked:
                break
            trials = [trial for trial, _ in asked]
            with Heartbeat(storage, [compat.trial_id(t) for t in trials], self.heartbeat_interval):
                returns = self.launcher.launch([o for _, o in asked], initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, returns):
                failures += self._tell(study, trial, ret, n_directions)
            self._check_failures(failures)

    def _sweep_as_slots_free(self, study, storage, distributions, fixed, n_directions: int) -> None:
        """Every free slot runs a trial: the next one is asked as soon as any trial ends
        (completed, pruned or failed). The budget is counted as in batches (the study's
        finished and running trials), so several workers on one storage stop together."""
        failures, running, beating = 0, {}, []
        with Heartbeat(storage, beating, self.heartbeat_interval):
            try:
                while True:
                    while self.launcher.free_slots() > 0 and self.n_trials - self._in_budget(study) > 0:
                        asked = self._next(study, distributions, fixed)
                        if asked is None:
                            break
                        trial, overrides = asked
                        self.launcher.submit(overrides, trial.number)
                        running[trial.number] = trial
                        beating.append(compat.trial_id(trial))
                    if not running:
                        break
                    for number, ret in self.launcher.wait_any():
                        trial = running.pop(number)
                        beating.remove(compat.trial_id(trial))
                        failures += self._tell(study, trial, ret, n_directions)
                    self._check_failures(failures)
            except BaseException:
                self.launcher.stop_all()  # no trial outlives the sweep; they are failed as stale later
                raise
            finally:
                self.launcher.close()

    def _dry_run(self, sweep_dir: Path) -> None:
        """What the search would do now: the study's trials by state, how many new trials
        it would start and on which slots. Changes nothing: no study, trial or file is
        created, and stale trials are only counted."""
        url = str(self.storage)
        trials, stale = [], 0
        exists = not url.startswith(("sqlite:///", "journal:///")) or Path(url.split(":///", 1)[1]).is_file()
        if exists:
            storage = open_storage(url, self.heartbeat_interval, self.grace_period)
            try:
                study = optuna.load_study(study_name=self.study_name, storage=storage, sampler=None)
                trials, stale = study.get_trials(deepcopy=False), len(compat.stale_trial_ids(storage, study))
            except KeyError:
                exists = False
        by_state: dict[str, int] = {}
        for t in trials:
            key = "failed, not counted" if t.state == TrialState.FAIL and not counted(t) else t.state.name.lower()
            by_state[key] = by_state.get(key, 0) + 1
        in_budget = sum(counted(t) for t in trials) + sum(t.state == TrialState.RUNNING for t in trials) - stale
        left = max(0, self.n_trials - in_budget)
        slots = [s.name for s in getattr(self.launcher, "slots", [])]
        print(f"dry run: study {self.study_name!r} in {url}{'' if exists else ' (new)'}, sweep {sweep_dir}")
        print(f"  trials so far: {', '.join(f'{n} {k}' for k, n in sorted(by_state.items())) or 'none'}")
        if stale:
            print(f"  {stale} running trial(s) without a heartbeat: failed as stale at the start, not counted")
        print(f"  budget: {self.n_trials} counted trials; {left} new trial(s) would be started")
        if slots and left:
            print(f"  {min(left, len(slots))} at once on slots {', '.join(slots)}, the next as each ends")
        elif left:
            print(f"  in batches of {min(left, self.n_jobs)} ({type(self.launcher).__name__})")

    def _save_results(self, study: optuna.Study, directions: list[str]) -> None:
        finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not finished:
            log.warning("no trial of study %r completed", study.study_name)
            return
        if len(directions) == 1:
            best = study.best_trial
            results: dict[str, Any] = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            log.info("best value %s with %s (trial %d)", best.value, best.params, best.number)
        else:
            results = {
                "name": "optuna",
                "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials],
            }
            log.info("%d Pareto-optimal trials", len(study.best_trials))
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")
