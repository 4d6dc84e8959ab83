"""optuna-dashboard on the project's studies: trials, best values, history, parameter
importances and Pareto fronts in a browser, live while a search runs.

    python -m sweeps.dashboard                                  # outputs/optuna.db, http://127.0.0.1:8080
    python -m sweeps.dashboard journal:///shared/optuna.log --port 8081
    make dashboard STORAGE=postgresql://optuna@dbhost/optuna

Takes the same storage URLs as `hydra.sweeper.storage`, journal files included (the
dashboard's own command line takes only RDB URLs and bare file names). It listens on
loopback only unless `--host` says otherwise: the dashboard can edit notes and delete
studies, so put it behind SSH (`ssh -L 8080:127.0.0.1:8080 host`) rather than on a
public address. Needs `pip install -e '.[dashboard]'` (part of the test extra).
"""

from __future__ import annotations

import argparse
import sys

from trainer.search.optuna_compat import open_storage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("storage", nargs="?", help="a storage URL (default: sqlite:///outputs/optuna.db)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    try:
        import optuna_dashboard
    except ImportError:
        print("error: optuna-dashboard is not installed: pip install -e '.[dashboard]'", file=sys.stderr)
        return 2
    url = args.storage or "sqlite:///outputs/optuna.db"  # where the search presets keep their studies
    try:
        storage = open_storage(url)
    except Exception as err:
        print(f"error: cannot open the study storage {url}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(f"optuna-dashboard on {url}: http://{args.host}:{args.port}/dashboard", flush=True)
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
