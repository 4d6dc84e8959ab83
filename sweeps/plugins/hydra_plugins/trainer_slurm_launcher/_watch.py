"""Job states from `squeue` where SLURM keeps no accounting database.

submitit asks `sacct` for the state of its jobs. Without accounting (a small cluster, the
local one of sweeps/slurm/local_cluster.sh) `sacct` fails, submitit warns at every poll
and sees every job as UNKNOWN: a job that ends without writing its result (cancelled,
killed) is then waited for forever. `squeue -t all` knows running jobs and, for
`MinJobAge` seconds, finished ones, in the same states; this watcher asks it instead.
"""

import subprocess
import typing as tp
from functools import lru_cache


@lru_cache(maxsize=1)
def sacct_works() -> bool:
    try:
        return subprocess.run(["sacct", "-n", "-j", "1"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def watch_with_squeue_without_sacct() -> None:
    """Make submitit's SLURM jobs ask `squeue` when `sacct` does not work here."""
    from submitit.slurm import slurm

    if sacct_works() or isinstance(slurm.SlurmJob.watcher, SqueueWatcher()):
        return
    slurm.SlurmJob.watcher = SqueueWatcher()(delay_s=slurm.SlurmJob.watcher._delay_s)


@lru_cache(maxsize=1)
def SqueueWatcher() -> tp.Any:  # noqa: N802 - a class, made on first use (submitit imports late)
    from submitit.slurm.slurm import SlurmInfoWatcher

    class _SqueueWatcher(SlurmInfoWatcher):
        def _make_command(self) -> tp.Optional[tp.List[str]]:
            to_check = {x.split("_")[0] for x in self._registered - self._finished}
            if not to_check:
                return None
            # one line per array task, finished ones included while slurmctld keeps them
            return ["squeue", "--array", "-t", "all", "-o", "%i|%T|%N", "-j", ",".join(sorted(to_check))]

        def read_info(self, string: tp.Union[bytes, str]) -> tp.Dict[str, tp.Dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            lines = text.splitlines()
            # squeue's header (JOBID|STATE|NODELIST) in sacct's names, which submitit reads
            info = super().read_info("\n".join(["JobID|State|NodeList", *lines[1:]]))
            # the tasks of an array cancelled before any started are one record, `<array id>`
            for job_id in self._registered:
                base = job_id.split("_")[0]
                if job_id not in info and base != job_id and base in info:
                    info[job_id] = info[base]
            return info

    return _SqueueWatcher
