"""Which code, libraries and machine produced a run (summary.json `provenance`).

The git state is read from the checkout the `trainer` package was imported from; when the
tree has uncommitted changes, `git diff HEAD` (and the names of untracked files) is kept
beside the run as `git.diff`, so a row of a report can always be traced to its code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger("trainer")

ROOT = Path(__file__).resolve().parents[1]
DIFF = "git.diff"
SNAPSHOT = "SNAPSHOT.json"  # in a code snapshot: the git state of the checkout it was taken from


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """commit, dirty, and the diff text (None when clean or not a git checkout)."""
    if (root / SNAPSHOT).is_file():  # a copy of a checkout (hydra/launcher=slurm's), maybe inside one
        snap = json.loads((root / SNAPSHOT).read_text())
        diff = root / DIFF
        return {"commit": snap["commit"], "dirty": snap["dirty"], "diff": diff.read_text() if diff.is_file() else None,
                "snapshot": snap["hash"]}  # fmt: skip
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff": None}
    # ignored files (outputs/, .venv/) are not code; untracked ones may be
    status = _git(root, "status", "--porcelain") or ""
    dirty = bool(status.strip())
    diff = None
    if dirty:
        untracked = [line[3:] for line in status.splitlines() if line.startswith("?? ")]
        diff = (_git(root, "diff", "HEAD", "--binary") or "") + "".join(f"# untracked: {p}\n" for p in untracked)
    return {"commit": commit.strip(), "dirty": dirty, "diff": diff}


@lru_cache(maxsize=1)
def cpu() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    except OSError:
        pass
    return {"model": model, "flags": " ".join(flags), "count": os.cpu_count()}


def versions() -> dict[str, str | None]:
    import hydra
    import numpy as np
    import torch
    import torchaudio

    out: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "hydra": hydra.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
    }
    from importlib import metadata

    try:  # from the package metadata: importing Optuna costs a second a run does not need
        out["optuna"] = metadata.version("optuna")
    except metadata.PackageNotFoundError:
        pass
    return out


def gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def process_command() -> list[str]:
    """This process's command line, `python -m trainer ...` spelled as typed."""
    argv = list(sys.argv) or [""]
    if argv[0].endswith("__main__.py"):
        argv[0:1] = ["python", "-m", Path(argv[0]).parent.name]
    return argv


def collect(run_dir: Path | None = None, command: list[str] | None = None, root: Path = ROOT) -> dict[str, Any]:
    """The provenance record; writes `git.diff` into `run_dir` when the tree is dirty.
    `command` is the job's own command (a multirun job's, not its launcher worker's)."""
    git = git_state(root)
    diff = git.pop("diff")
    if diff is not None:
        git["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
        if run_dir is not None:
            try:
                Path(run_dir).mkdir(parents=True, exist_ok=True)
                (Path(run_dir) / DIFF).write_text(diff)
                git["diff_file"] = DIFF
            except OSError as err:  # the record says so; the run itself is not at stake
                (Path(run_dir) / DIFF).unlink(missing_ok=True)
                git["diff_file"] = None
                log.warning("could not keep the uncommitted changes beside the run (%s): %s", DIFF, err)
    return {
        "git": git,
        "command": command or process_command(),
        "argv": process_command(),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu(),
        "gpus": gpus(),
        "versions": versions(),
        "slot": slot(),
    }


def slot() -> dict[str, Any] | None:
    """The slot of `hydra/launcher=slots` this job ran on (name, device, its
    CUDA_VISIBLE_DEVICES, threads), and what the job itself saw of them; None under
    another launcher."""
    value = os.environ.get("TRAINER_SLOT")
    if not value:
        return None
    import torch

    try:
        given = json.loads(value)
    except ValueError:
        given = {"unreadable": value}
    seen = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {**given, "seen_cuda_visible": seen, "seen_threads": torch.get_num_threads()}


def code_version(provenance: dict[str, Any] | None) -> str | None:
    """commit, plus the diff's hash when dirty: runs with equal values ran the same code."""
    git = (provenance or {}).get("git") or {}
    if not git.get("commit"):
        return None
    return git["commit"][:12] + (f"+{git['diff_sha256'][:8]}" if git.get("dirty") else "")
