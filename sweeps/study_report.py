"""Report on an Optuna study: trials, best parameters, importances, and plots.

    python -m sweeps.report --study sqlite:///outputs/optuna.db denoise_lstm [--out DIR]
    python -m sweeps.report outputs/search/denoise_lstm      # finds storage and study itself

Writes study.md, study.csv (one row per trial), study.html (self-contained) and the
PNGs optimization_history, parallel_coordinate, param_importances (and pareto_front for
two objectives). The study itself is only read: standard Optuna tools (optuna-dashboard,
`optuna.load_study`) keep working on it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import yaml


def locate_study(sweep_dir: Path) -> tuple[str, str] | None:
    """(storage, study name) of a search's sweep directory (study.yaml, written by the
    trainer_optuna sweeper)."""
    path = Path(sweep_dir) / "study.yaml"
    if not path.is_file():
        return None
    study = yaml.safe_load(path.read_text()) or {}
    return str(study["storage"]), str(study["study_name"])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.5g}"
    return "—" if value is None else str(value)


def trial_rows(study) -> tuple[list[str], list[list[str]]]:
    trials = study.get_trials(deepcopy=False)
    params = sorted({p for t in trials for p in t.params})
    multi = len(study.directions) > 1
    values = [f"value {i}" for i in range(len(study.directions))] if multi else ["value"]
    columns = ["trial", "state", *values, "seconds", *params, "run dir", "reason"]
    rows = []
    for t in trials:
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        vals = list(t.values) if t.values else [None] * len(values)
        if t.state.name == "PRUNED" and t.intermediate_values:
            vals = [t.intermediate_values[max(t.intermediate_values)]]  # the value when it was stopped
        reason = t.user_attrs.get("reason") or next(
            (f"{k}={t.user_attrs[k]}" for k in ("duplicate_of", "surplus", "aborted") if k in t.user_attrs), ""
        )
        run_dir = Path(t.user_attrs["run_dir"]).name if t.user_attrs.get("run_dir") else ""
        rows.append(
            [
                str(t.number),
                t.state.name,
                *(_fmt(v) for v in vals),
                _fmt(seconds),
                *(_fmt(t.params.get(p)) for p in params),
                run_dir,
                str(reason)[:120],
            ]
        )
    return columns, rows


FEW_TRIALS = 10  # below this many complete trials, importances come with a caveat


def importances(study) -> dict[str, float]:
    """Mean-decrease-impurity importances (a random forest on the complete trials).
    Optuna 2.10's default fANOVA evaluator breaks on scikit-learn >= 1.4 tree arrays."""
    import optuna
    from optuna.importance import MeanDecreaseImpurityImportanceEvaluator

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2 or len(study.directions) > 1:
        return {}
    try:
        return dict(
            optuna.importance.get_param_importances(study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=0))
        )
    except Exception:  # too few distinct values, a single parameter, ...
        return {}


def plots(study, out: Path, imp: dict[str, float]) -> list[Path]:
    """Optimization history (Optuna's own plot), parallel coordinates and importances
    (drawn here: Optuna 2.10's versions of those two fail on current matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.visualization import matplotlib as ovm

    paths = []
    multi = len(study.directions) > 1
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]

    def save(fig, name):
        fig.set_size_inches(10, 5.5)
        fig.tight_layout()
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

    if complete:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            ax = ovm.plot_optimization_history(
                study,
                target=(lambda t: t.values[0]) if multi else None,
                target_name="objective 0" if multi else "Objective Value",
            )
        save(ax.get_figure(), "optimization_history")

    params = sorted({p for t in complete for p in t.params})
    if complete and params:
        fig, ax = plt.subplots()
        values = np.array([t.values[0] for t in complete])
        columns = []
        for p in params:
            raw = [t.params.get(p) for t in complete]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
                x = np.array(raw, dtype=float)
                if x.min() > 0 and x.max() / x.min() > 100:
                    x = np.log10(x)  # log-scaled parameters read better on a log axis
            else:
                levels = sorted({str(v) for v in raw})
                x = np.array([levels.index(str(v)) for v in raw], dtype=float)
            span = x.max() - x.min()
            columns.append((x - x.min()) / span if span else np.full_like(x, 0.5))
        lines = np.stack(columns, axis=1)
        norm = plt.Normalize(values.min(), values.max())
        for row, value in zip(lines, values):
            ax.plot(range(len(params)), row, color=plt.cm.viridis(norm(value)), alpha=0.8)
        ax.set_xticks(range(len(params)), params, rotation=20, ha="right", fontsize=8)
        ax.set_yticks([])
        ax.set_title("Parallel coordinates (each axis min..max; log10 for log-scaled parameters)", fontsize=10)
        fig.colorbar(
            plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="objective" + (" 0" if multi else "")
        )
        save(fig, "parallel_coordinate")

    if imp:
        fig, ax = plt.subplots()
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="#4c72b0")
        ax.set_xlabel("importance (mean decrease in impurity)")
        n = len([t for t in study.trials if t.state.name == "COMPLETE"])
        caveat = f" (only {n} complete trials: mostly noise)" if n < FEW_TRIALS else ""
        ax.set_title(f"Parameter importances{caveat}", fontsize=10)
        save(fig, "param_importances")

    if multi and len(study.directions) == 2 and complete:
        fig, ax = plt.subplots()
        front = {t.number for t in study.best_trials}
        for t in complete:
            ax.scatter(
                *t.values, color="#c44e52" if t.number in front else "#bbbbbb", zorder=3 if t.number in front else 2
            )
        ax.set_xlabel("objective 0")
        ax.set_ylabel("objective 1")
        ax.set_title("Pareto front (red)", fontsize=10)
        save(fig, "pareto_front")
    return paths


def report(storage: str, study_name: str, out: Path) -> str:
    import optuna

    from sweeps.tables import print_table, write_outputs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from trainer.search.optuna_compat import open_storage

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = trial_rows(study)
    states = {s: sum(r[1] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    title = f"Study {study_name}: {len(rows)} trials ({', '.join(f'{v} {k.lower()}' for k, v in states.items() if v)})"
    lines = [title, ""]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if complete and len(study.directions) == 1:
        best = study.best_trial
        lines += [
            f"best value {best.value:.5g} (trial {best.number}, {study.direction.name.lower()})",
            "best parameters:",
        ]
        lines += [f"  {k} = {v}" for k, v in best.params.items()]
    elif complete:
        lines += [
            f"Pareto front: {len(study.best_trials)} trials: " + ", ".join(str(t.number) for t in study.best_trials)
        ]
    imp = importances(study)
    if imp:
        lines += ["parameter importances (mean decrease in impurity):"] + [f"  {k}: {v:.3f}" for k, v in imp.items()]
        if len(complete) < FEW_TRIALS:
            lines.append(
                f"  caveat: from {len(complete)} complete trials; a forest on fewer than {FEW_TRIALS} ranks "
                "parameters mostly by noise"
            )
    figures = plots(study, out, imp)
    summary = "\n".join(lines)
    write_outputs(out, columns, rows, figures, title, stem="study", preamble=summary)
    print(summary + "\n")
    print_table(columns, rows)
    return summary
