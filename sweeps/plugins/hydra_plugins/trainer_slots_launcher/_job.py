"""One job of `hydra/launcher=slots`, in its own process:

    python -m hydra_plugins.trainer_slots_launcher._job <sweep pid> [module to preload ...]

The process imports the modules to preload, then reads one line from stdin: its job file,
result file and log file, tab-separated (the pool starts it ahead of its job, so that the
imports overlap the slot's current job; EOF: no job came, it exits). The job file holds
what Hydra's `run_job` needs (pickled by the pool, as the joblib and submitit launchers
do); the JobReturn is written to the result file, atomically.
"""

import ctypes
import importlib
import os
import signal
import sys
from pathlib import Path


def die_with(parent: int) -> None:
    """SIGTERM this job if the sweep dies (Linux); the job then writes `last` and stops."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the sweep died before the line above
        sys.exit(128 + signal.SIGTERM)


def main(parent: int, preload: list) -> None:
    die_with(parent)
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as err:  # the job imports what it needs itself, and fails there if it must
            print(f"slots: preloading {name} failed ({type(err).__name__}: {err})", file=sys.stderr)
    line = sys.stdin.readline()
    if not line.strip():
        return
    job, result, log = line.rstrip("\n").split("\t")
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    run(job, result)


def run(job: str, result: str) -> None:
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    idx, overrides, hydra_context, config, task_function, singleton_state = cloudpickle.loads(Path(job).read_bytes())
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    ret = run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    try:
        data = cloudpickle.dumps(ret)
    except Exception as err:  # an exception that does not pickle: its text does
        ret._return_value = RuntimeError(f"{type(ret._return_value).__name__}: {ret._return_value} ({err})")
        data = cloudpickle.dumps(ret)
    tmp = Path(f"{result}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, result)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
