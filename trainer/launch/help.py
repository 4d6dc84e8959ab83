"""`python -m trainer --help`: the config groups, each with the line its comment in
conf/config.yaml gives it, the everyday commands and the companion commands. Hydra shows
it through `hydra.help.template` (conf/config.yaml), so `--help` still takes overrides."""

from __future__ import annotations

import re
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"

USAGE = """\
python -m trainer: train audio models in plain PyTorch, one Hydra-composed config per run.

Usage:
  python -m trainer [group=option ...] [key=value ...]   one run (no arguments: the default job)
  python -m trainer -m group=a,b [key=x,y ...]          a multirun: one job per combination
  python -m trainer --cfg job [overrides]                print the composed config, run nothing"""

EVERYDAY = [
    ("python -m trainer model=conv optim=sgd", "pick options from config groups"),
    ("python -m trainer trainer.epochs=20 optim.lr=1e-3", "any key, type-checked before anything runs"),
    ("python -m trainer -m optim=adamw,sgd 'trainer.seed=range(3)'", "a sweep with seed repeats; rerun to resume"),
    ("python -m trainer +sweep=precision model=conv", "a sweep preset (conf/sweep/)"),
    ("python -m trainer +search=tiny", "an Optuna search; rerun to continue it"),
]

COMPANIONS = [
    ("python -m trainer.runs list", "every run under outputs/: list, show, diff"),
    ("python -m trainer.runs tensorboard <sweep dir>", "TensorBoard on a sweep's runs, named by their choices"),
    ("python -m sweeps.report <sweep dir>", "the runs side by side: speed, metrics, 95% intervals"),
    ("python -m trainer.evaluate <run dir> <data dir>", "score a checkpoint on noisy/ and clean/ folders"),
    ("python -m trainer.enhance <run dir> <in> -o <out>", "enhance your own recordings"),
    ("python -m trainer.export <run dir> -o <out>", "TorchScript and ONNX (streaming for a causal LSTM)"),
]


def groups(conf: Path = CONF) -> list[tuple[str, list[str], str]]:
    """(group, its options with the default first, its description) from the defaults list
    of conf/config.yaml and the `+group` comment lines below it."""
    out = []
    for line in (conf / "config.yaml").read_text().splitlines():
        chosen = re.match(r"\s+- (\w+): (\w+)\s+# (.+)$", line)
        added = re.match(r"#\s+\+(\w+): (.+)$", line)
        if chosen:
            group, default, said = chosen.groups()
            options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
            out.append((group, [default, *(o for o in options if o != default)], said.split(" (last:")[0]))
        elif added:
            group, said = added.groups()
            out.append((f"+{group}", sorted(p.stem for p in (conf / group).glob("*.yaml")), said))
    return out


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(a) for a, _ in rows)
    return [f"  {a:{width}s}   {b}" for a, b in rows]


def text(conf: Path = CONF) -> str:
    table = groups(conf)
    width = max(len(g) for g, _, _ in table)
    lines = [USAGE, "", "Config groups (conf/<group>/<option>.yaml; the default first):"]
    for group, options, said in table:
        lines.append(f"  {group:{width}s}   {said}")
        lines.append(f"  {'':{width}s}     {', '.join(options)}")
    lines += ["", "Everyday:", *_rows(EVERYDAY), "", "Companion commands:", *_rows(COMPANIONS)]
    lines += ["", "Guides: docs/guide/README.md.  Hydra's own options: python -m trainer --hydra-help"]
    return "\n".join(lines).replace("$", "$$")  # Hydra fills the template with string.Template
