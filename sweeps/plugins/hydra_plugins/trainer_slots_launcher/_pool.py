"""The slots and the pool of job processes behind `hydra/launcher=slots` (see __init__.py)."""

# No `from __future__ import annotations`: see __init__.py.
import atexit
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cloudpickle
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides

log = logging.getLogger("hydra_plugins.trainer_slots_launcher")

POLL_S = 0.05
JOB_MODULE = "hydra_plugins.trainer_slots_launcher._job"


@dataclass(frozen=True)
class Slot:
    name: str  # cuda:0, cuda:0#2 (the second job on GPU 0), cpu#1
    device: str  # cuda:<index> as this machine numbers its visible GPUs, or cpu
    visible: str  # the job's CUDA_VISIBLE_DEVICES ("" on a CPU slot: no GPU at all)
    threads: int

    def env(self) -> Dict[str, str]:
        threads = str(self.threads)
        return {
            "CUDA_VISIBLE_DEVICES": self.visible,
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "TRAINER_SLOT": json.dumps(asdict(self)),  # provenance.slot in summary.json
        }


def visible_gpus() -> List[str]:
    """This process's GPUs, as CUDA_VISIBLE_DEVICES names them (ids or UUIDs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch here, or no driver: no GPU
        return []


def plan_slots(
    devices: Optional[Sequence[str]] = None,
    jobs_per_gpu: int = 1,
    cpu_slots: Optional[int] = None,
    threads: Optional[int] = None,
    gpus: Optional[List[str]] = None,
    cores: Optional[int] = None,
) -> List[Slot]:
    """The slots: `devices` (cuda:N or cpu, each cpu entry one slot) or every visible GPU,
    `jobs_per_gpu` slots on each; without a GPU, `cpu_slots` (default: cores / `threads`).
    The cores are shared out so that the slots' threads never exceed them."""
    gpus = visible_gpus() if gpus is None else gpus
    cores = cores or len(os.sched_getaffinity(0))
    if jobs_per_gpu < 1:
        raise ValueError(f"hydra.launcher.jobs_per_gpu={jobs_per_gpu}: at least 1")
    for key, value in (("cpu_slots", cpu_slots), ("threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"hydra.launcher.{key}={value}: at least 1")
    if devices is None:
        devices = [f"cuda:{i}" for i in range(len(gpus))] or ["cpu"] * (cpu_slots or max(1, cores // (threads or 1)))
    elif cpu_slots is not None:
        raise ValueError("hydra.launcher.cpu_slots and hydra.launcher.devices: give one (each cpu device is a slot)")
    plan: List[Tuple[str, str, str]] = []
    for device in devices:
        device = str(device)
        if device == "cpu":
            plan.append((f"cpu#{sum(d == 'cpu' for _, d, _ in plan)}", "cpu", ""))
            continue
        index = device[len("cuda:") :] if device.startswith("cuda:") else ""
        if not index.isdigit() or int(index) >= len(gpus):
            raise ValueError(
                f"hydra.launcher.devices: {device!r} is not one of this machine's devices "
                f"(cpu, {', '.join(f'cuda:{i}' for i in range(len(gpus))) or 'no GPU visible'})"
            )
        for k in range(jobs_per_gpu):
            plan.append((device if jobs_per_gpu == 1 else f"{device}#{k}", device, gpus[int(index)]))
    share = threads or max(1, cores // len(plan))
    return [Slot(name, device, visible, share) for name, device, visible in plan]


@dataclass
class Child:
    idx: int
    overrides: List[str]
    slot: int
    pid: int  # the job's process (and process group), forked by the slot's server
    result: Path
    log: Path
    started: float
    killed_at: Optional[float] = None
    code: Optional[int] = None  # its exit code, once it ended


class Server:
    """A slot's job server (_job.py): a process that imported torch and the trainer once,
    on the slot's device and threads, and forks one process per job."""

    def __init__(self, slot: Slot, preload: Sequence[str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", JOB_MODULE, str(os.getpid()), *preload],
            env={**os.environ, **slot.env()},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # the protocol; the jobs write to their logs
            bufsize=0,  # unbuffered: `select` on the pipe then says whether a line waits
            start_new_session=True,  # Ctrl-C reaches the sweep only, which stops the jobs in order
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def start(self, job: Path, result: Path, log_path: Path) -> int:
        """Fork the job; its pid (blocks while the server is still importing)."""
        self.process.stdin.write(f"{job}\t{result}\t{log_path}\n".encode())  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        words = self.process.stdout.readline().split()  # type: ignore[union-attr]
        if words[:1] != [b"started"]:
            raise BrokenPipeError(f"the slot's job server ended (status {self.process.wait()})")
        return int(words[1])

    def ended(self) -> Optional[int]:
        """The running job's exit code once it ended, else None (never blocks)."""
        if not select.select([self.process.stdout], [], [], 0)[0]:
            return None
        words = self.process.stdout.readline().split()  # type: ignore[union-attr]
        if words[:1] == [b"exited"]:
            return int(words[2])
        return -signal.SIGKILL if self.process.poll() is None else -abs(self.process.wait() or signal.SIGKILL)

    def close(self) -> None:
        """No more jobs: EOF on its stdin ends it; SIGKILL if it does not."""
        try:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()


class Pool:
    """Job processes on slots. `submit` starts one on a free slot; `wait_any` returns the
    jobs that ended; `run_all` does both for a list of jobs, in order."""

    def __init__(self, slots: List[Slot], hydra_context, task_function, config, grace_s: float,
                 preload: Sequence[str] = ()):  # fmt: skip
        self.slots, self.grace_s, self.preload = slots, grace_s, list(preload)
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.free = list(range(len(slots)))
        self.running: Dict[int, Child] = {}
        self.stopping: Optional[int] = None  # the signal the sweep received
        self.previous: Dict[int, Any] = {}
        self.work: Optional[Path] = None  # the jobs' pickles, made at the first submit
        self.timeline: List[Dict[str, Any]] = []  # when each job ran on which slot
        # one job server per slot, started at its first job: it pays the imports (seconds
        # of CPU) once, and a job starts with a fork instead of a fresh `python`
        self.servers: Dict[int, Server] = {}

    # -- signals ---------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self.stopping is None:
            log.warning(
                "%s: stopping %d job(s); each writes `last` (the same command resumes them)",
                signal.Signals(signum).name,
                len(self.running),
            )
        self.stopping = signum
        for child in self.running.values():
            self._signal(child, signal.SIGTERM)

    def _watch_signals(self, on: bool) -> None:
        if on and not self.previous:
            self.previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        elif not on and self.previous:
            for s, handler in self.previous.items():
                signal.signal(s, handler)
            self.previous = {}

    @staticmethod
    def _signal(child: Child, signum: int) -> None:
        try:
            os.killpg(child.pid, signum)  # the job and whatever it started (data workers)
        except ProcessLookupError:
            pass

    # -- jobs --------------------------------------------------------------------------
    def free_slots(self) -> int:
        return 0 if self.stopping is not None else len(self.free)

    def close(self) -> None:
        """End the slots' job servers (no job will come)."""
        servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            server.close()

    def submit(self, overrides: Sequence[str], idx: int) -> None:
        """Start job `idx` on a free slot."""
        if not self.free:
            raise RuntimeError("no free slot: wait_any() first")
        slot_index = self.free.pop(0)
        slot = self.slots[slot_index]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        logs = sweep_dir / ".slots"
        logs.mkdir(parents=True, exist_ok=True)
        if self.work is None:
            self.work = Path(tempfile.mkdtemp(prefix="trainer-slots-"))
            atexit.register(shutil.rmtree, self.work, ignore_errors=True)
        job, result = self.work / f"{idx}.job", self.work / f"{idx}.result"
        result.unlink(missing_ok=True)
        payload = (idx, list(overrides), self.hydra_context, self.config, self.task_function, Singleton.get_state())
        job.write_bytes(cloudpickle.dumps(payload))
        log_path = logs / f"{idx}.log"
        self._watch_signals(True)
        if not self.servers:  # every slot's server at once: their imports run side by side
            self.servers = {i: Server(s, self.preload) for i, s in enumerate(self.slots)}
        for attempt in (0, 1):  # a server that died (killed between jobs) is replaced once
            server = self.servers.get(slot_index)
            if server is None or not server.alive():
                server = self.servers[slot_index] = Server(slot, self.preload)
            try:
                pid = server.start(job, result, log_path)
                break
            except (BrokenPipeError, ValueError):
                if attempt:
                    raise
                self.servers.pop(slot_index).close()
        log.info("#%d on %s: %s", idx, slot.name, " ".join(filter_overrides(list(overrides))))
        self.running[idx] = Child(idx, list(overrides), slot_index, pid, result, log_path, time.time())

    def _returned(self, child: Child, code: int) -> JobReturn:
        if child.result.is_file():
            try:
                return cloudpickle.loads(child.result.read_bytes())
            except Exception as err:
                reason = f"its result could not be read back ({type(err).__name__}: {err})"
        elif code < 0 or code > 128:
            signum = -code if code < 0 else code - 128
            name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
            why = {"SIGKILL": " (out of memory, or killed)", "SIGTERM": " (interrupted: `last` resumes it)"}
            reason = f"killed by {name}{why.get(name, '')}"
        else:
            reason = f"exited with status {code}"
        slot = self.slots[child.slot].name
        error = RuntimeError(f"job #{child.idx} on slot {slot} {reason}; its output: {child.log}")
        return JobReturn(overrides=child.overrides, status=JobStatus.FAILED, _return_value=error)

    def _record(self, child: Child, ret: JobReturn) -> None:
        """A line of `<sweep dir>/.slots/timeline.jsonl`: which job ran when on which slot
        (benchmarks/slots.py reads the slots' busy time from it)."""
        entry = {"job": child.idx, "slot": self.slots[child.slot].name, "start": child.started, "end": time.time(),
                 "status": ret.status.name, "code": child.code}  # fmt: skip
        self.timeline.append(entry)
        with open(child.log.parent / "timeline.jsonl", "a") as out:
            out.write(json.dumps(entry) + "\n")

    def wait_any(self) -> List[Tuple[int, JobReturn]]:
        """Block until at least one job ends; its index and JobReturn (several if they
        ended together). After a SIGTERM or Ctrl-C, waits for every job, then exits."""
        ended: List[Tuple[int, JobReturn]] = []
        while self.running and not ended:
            time.sleep(POLL_S)
            for idx, child in list(self.running.items()):
                code = child.code = self.servers[child.slot].ended()
                if code is None:
                    if self.stopping is not None:
                        child.killed_at = child.killed_at or time.time()
                        if time.time() - child.killed_at > self.grace_s:
                            self._signal(child, signal.SIGKILL)
                    continue
                del self.running[idx]
                self.free.append(child.slot)
                self.free.sort()
                ret = self._returned(child, code)
                self._record(child, ret)
                if ret.status == JobStatus.FAILED:
                    log.warning("#%d failed: %s", idx, ret._return_value)
                ended.append((idx, ret))
            if self.stopping is not None and self.running:
                ended = []  # only once every job has stopped
        if not self.running:
            self._watch_signals(False)
            if self.stopping is not None:
                self.close()
                signum, self.stopping = self.stopping, None
                raise SystemExit(128 + signum)
        return ended

    def stop_all(self) -> None:
        """SIGTERM every running job and wait for them (grace_s, then SIGKILL)."""
        for child in self.running.values():
            self._signal(child, signal.SIGTERM)
            child.killed_at = time.time()
        deadline = time.time() + self.grace_s
        while self.running:
            for idx, child in list(self.running.items()):
                if self.servers[child.slot].ended() is not None:
                    del self.running[idx]
                    self.free.append(child.slot)
                elif time.time() > deadline:
                    self._signal(child, signal.SIGKILL)
            time.sleep(POLL_S)
        self.close()
        self._watch_signals(False)

    def run_all(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[JobReturn]:
        """Every job, each started as soon as a slot is free; the JobReturns in job order."""
        pending = list(enumerate(job_overrides, start=initial_job_idx))
        returns: Dict[int, JobReturn] = {}
        log.info(
            "%d job(s) on %d slot(s): %s (output: %s/.slots/<job>.log)",
            len(pending),
            len(self.slots),
            ", ".join(f"{s.name} ({s.threads} thread{'s' if s.threads > 1 else ''})" for s in self.slots),
            self.config.hydra.sweep.dir,
        )
        try:
            while pending or self.running:
                while pending and self.free_slots():
                    idx, overrides = pending.pop(0)
                    self.submit(overrides, idx)
                for idx, ret in self.wait_any():
                    returns[idx] = ret
        finally:
            self.close()
        return [returns[i] for i in sorted(returns)]
