"""The code snapshot behind `hydra/launcher=slurm`: what a queued job runs.

A job may wait in a SLURM queue for hours, and is requeued after a time limit or a
preemption; meanwhile the working tree changes. So at submission the code is copied, as
Dora's `git_save` does: the tracked tree with its uncommitted changes (`git stash
create`, which touches neither the tree nor the stash) and the new files git does not
ignore, into `<sweep dir>/.code/<hash>`, named by a hash of that content (an unchanged
tree reuses its snapshot). Each job's Python path and Hydra config search path point
there. `SNAPSHOT.json` and `git.diff` beside the code give the provenance the git state
it would have read from the checkout.
"""

import copy
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, List, Optional, Tuple

from hydra.errors import HydraException

from trainer import provenance

ROOT = provenance.ROOT


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def snapshot_code(parent: Path) -> Path:
    """The snapshot of the code as it is now, under `parent` (made once per content)."""
    try:
        head = _git("rev-parse", "HEAD").strip()
        commit = _git("stash", "create").strip() or head
        tree = _git("rev-parse", f"{commit}^{{tree}}").strip()
        untracked = [p for p in _git("ls-files", "--others", "--exclude-standard", "-z").split("\0") if p]
    except (OSError, subprocess.CalledProcessError) as err:
        raise HydraException(
            f"hydra/launcher=slurm: no snapshot of the code can be taken, {ROOT} is not a git checkout ({err}); "
            "hydra.launcher.snapshot=false runs the jobs from the live tree"
        ) from None
    digest = hashlib.sha256(tree.encode())
    for name in sorted(untracked):
        digest.update(b"\0" + name.encode() + b"\0" + (ROOT / name).read_bytes())
    key = digest.hexdigest()
    dest = parent / key[:12]
    if (dest / "SNAPSHOT.json").is_file():
        return dest
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{key[:12]}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit], capture_output=True, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp, filter="tar")
    for name in untracked:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp / name)
    state = provenance.git_state(ROOT)
    if state["diff"] is not None:
        (tmp / provenance.DIFF).write_text(state["diff"])
    record = {"hash": key, "commit": head, "dirty": state["dirty"], "source": str(ROOT)}
    (tmp / "SNAPSHOT.json").write_text(json.dumps(record, indent=1) + "\n")
    try:
        tmp.rename(dest)  # whole or not at all: a job never sees a half-copied tree
    except OSError:  # another sweep made the same snapshot meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def use_snapshot(hydra_context: Any, code: Path, setup: Optional[List[str]]) -> Tuple[Any, List[str]]:
    """A Hydra context whose config search path reads the snapshot's `conf/` instead of
    the live tree's, and the sbatch setup lines that put the snapshot first on the jobs'
    Python path (ahead of the editable install, which points at the live tree)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.types import HydraContext

    search_path = copy.deepcopy(hydra_context.config_loader.config_search_path)
    for element in search_path.get_path():
        scheme, sep, path = element.path.rpartition("://") if "://" in element.path else ("", "", element.path)
        if scheme not in ("", "file"):  # pkg://, structured://: modules, not folders
            continue
        try:
            relative = Path(path).resolve().relative_to(ROOT)
        except ValueError:  # a search path outside the checkout (a package's): as it is
            continue
        element.path = f"{scheme}{sep}{code / relative}"
    context = HydraContext(config_loader=ConfigLoaderImpl(search_path), callbacks=hydra_context.callbacks)
    if sys.version_info < (3, 11):
        raise HydraException(
            "hydra/launcher=slurm: running jobs from a code snapshot needs Python 3.11 or newer (PYTHONSAFEPATH); "
            "hydra.launcher.snapshot=false runs them from the live tree"
        )
    paths = f"{code}:{code / 'sweeps' / 'plugins'}"
    return context, [
        *(setup or []),
        # the job starts in the submission folder, the live checkout: without this, `python -m`
        # would put that folder first on the path, ahead of the snapshot
        "export PYTHONSAFEPATH=1",
        f'export PYTHONPATH="{paths}${{PYTHONPATH:+:$PYTHONPATH}}"',
    ]
