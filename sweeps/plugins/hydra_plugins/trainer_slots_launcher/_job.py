"""A slot's job server for `hydra/launcher=slots`, one process per slot:

    python -m hydra_plugins.trainer_slots_launcher._job <sweep pid> [module to preload ...]

It imports the modules to preload once (torch, the trainer: seconds of CPU; an entry
`module:function` is also called, to fill a cache the jobs share), then serves
the slot's jobs one after another: for each line on stdin (job file, result file, log
file, tab-separated) it forks a job process, which starts with everything imported, and
answers `started <pid>`, then `exited <pid> <code>` when the job ends (a negative code:
the signal that ended it). EOF on stdin: no more jobs, it exits. A forked job is still a
process of its own (its own session, log and memory: a crash or an out-of-memory kill
takes down one job), as a fresh `python` would be, without paying the imports again.

The job file holds what Hydra's `run_job` needs (pickled by the pool, as the joblib and
submitit launchers do); the JobReturn is written to the result file, atomically. The
server never initialises CUDA, so each forked job does so itself, on its own device.
"""

import ctypes
import importlib
import os
import signal
import sys
import traceback
from pathlib import Path


def die_with(parent: int) -> None:
    """SIGTERM this process if its parent dies (Linux); a job then writes `last` and stops."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(128 + signal.SIGTERM)


def main(parent: int, preload: list) -> None:
    die_with(parent)
    for name in preload:  # `module`, or `module:function` to call once (a cache it fills)
        try:
            module, _, function = name.partition(":")
            imported = importlib.import_module(module)
            if function:
                getattr(imported, function)()
        except Exception as err:  # the job imports what it needs itself, and fails there if it must
            print(f"slots: preloading {name} failed ({type(err).__name__}: {err})", file=sys.stderr)
    server = os.getpid()
    for line in iter(sys.stdin.readline, ""):  # one job at a time: the slot has one
        job, result, log = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:
            os._exit(job_process(server, job, result, log))
        print(f"started {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exited {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


def job_process(server: int, job: str, result: str, log: str) -> int:
    """In the forked child: a session of its own (the pool signals the job's whole group),
    output to the job's log, stdin closed; the exit code."""
    os.setsid()
    die_with(server)
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    code = 0
    try:
        run(job, result)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


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
