"""An experiment's identity: a hash of what it computes, and a name a person can read.

The hash covers the resolved job config minus the result-neutral keys
(`config.RESULT_NEUTRAL`: where and how visibly a run happens, not what it computes). So
`python -m trainer optim=adamw` (the default, spelled out) and `python -m trainer` are one
experiment, while any value that changes the computation, however it was reached, gives
another. The alias (experiments/naming.py: `optim=sgd,trainer.seed=1`) names the run
directory, TensorBoard's run and a report's row, but never decides identity: two
different configs can share an alias, never a hash.

The hash is taken over a type-tagged encoding, so that values which print alike but
compute differently (1, 1.0, "1", true; a key "a.b" and a nested a: {b}) never collide.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainer.config import RESULT_NEUTRAL

SHORT = 10  # hex digits shown to people; the index and summary.json keep all 64
SEED = "trainer.seed"


def _tagged(value: Any) -> Any:
    """A JSON tree in which every value carries its type: an injective encoding."""
    if isinstance(value, dict):
        items = [[_tagged(k), _tagged(v)] for k, v in value.items()]
        return ["dict", sorted(items, key=lambda kv: json.dumps(kv[0]))]
    if isinstance(value, (list, tuple)):
        return ["list", [_tagged(v) for v in value]]
    if value is None:
        return ["none"]
    if isinstance(value, bool):  # before int: bool is an int subclass
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        return ["float", repr(value)]  # repr round-trips, and spells nan and inf
    if isinstance(value, str):
        return ["str", value]
    raise TypeError(f"cannot hash a config value of type {type(value).__name__}: {value!r}")


def canonical(config: dict[str, Any]) -> str:
    return json.dumps(_tagged(config), separators=(",", ":"), ensure_ascii=False)


def digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(config).encode()).hexdigest()


def without(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy of `config` without the dotted `keys` (absent ones are ignored)."""
    out = json.loads(json.dumps(config))  # a deep copy of plain data
    for key in keys:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def job_config(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """The job config (without the `hydra` node) as plain data, resolved or as written."""
    job = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg
    return OmegaConf.to_container(job, resolve=resolve, enum_to_str=True)  # type: ignore[return-value]


@dataclass(frozen=True)
class Experiment:
    hash: str  # of the config minus the result-neutral keys
    group: str  # the same minus the seed: repeats of one configuration share it
    alias: str  # readable; not unique
    seed: int | None

    @property
    def short(self) -> str:
        return self.hash[:SHORT]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _follow_seed(raw: Any, resolved: Any) -> Any:
    """`resolved` with every value that interpolates `trainer.seed` in `raw` (the unresolved
    config: `data.seed: ${trainer.seed}`) replaced by a placeholder, so that repeats agree."""
    if isinstance(raw, dict) and isinstance(resolved, dict):
        return {k: _follow_seed(raw.get(k), v) for k, v in resolved.items()}
    if isinstance(raw, list) and isinstance(resolved, list) and len(raw) == len(resolved):
        return [_follow_seed(r, v) for r, v in zip(raw, resolved)]
    return "<follows trainer.seed>" if isinstance(raw, str) and SEED in raw else resolved


MAX_ALIAS = 64  # characters: a terminal line shows a `runs list` row, a file browser the folder


def shorten(alias: str, hash_: str) -> str:
    """`alias` when it fits MAX_ALIAS, else the whole overrides that fit, how many were left
    out and the short hash: `a=1,b=2,+3-1e5d7e2594` (unique, because of the hash)."""
    if len(alias) <= MAX_ALIAS:
        return alias
    parts = split_alias(alias)
    tail = f"-{hash_[:SHORT]}"
    kept: list[str] = []
    for part in parts:  # in order, skipping what does not fit
        if len(",".join([*kept, part])) + len(f",+{len(parts)}") + len(tail) <= MAX_ALIAS:
            kept.append(part)
    left = len(parts) - len(kept)
    return ",".join([*kept, f"+{left}"]) + tail if kept else f"{alias[: MAX_ALIAS - len(tail) - 1]}~{tail}"


def of(cfg: DictConfig, alias: str) -> Experiment:
    """The identity of a job config (Hydra's, or a composed one); a long `alias` is
    shortened (`shorten`)."""
    config, raw = job_config(cfg), job_config(cfg, resolve=False)
    core = without(config, RESULT_NEUTRAL)
    hash_ = digest(core)
    return Experiment(
        hash=hash_,
        group=digest(without(_follow_seed(raw, core), (SEED,))),
        alias=shorten(alias or "default", hash_),
        seed=(config.get("trainer") or {}).get("seed"),
    )


def split_alias(alias: str) -> list[str]:
    """An alias's overrides: split at the commas outside brackets and quotes
    (`a=[1,2],b=3` -> `a=[1,2]`, `b=3`)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(alias):
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(alias[start:i])
            start = i + 1
    return [*parts, alias[start:]]


def alias_without_seed(alias: str) -> str:
    """`optim=sgd,trainer.seed=2` -> `optim=sgd`: the label of a group of repeats."""
    return re.sub(r"(^|,)[+~]*trainer\.seed=[^,]*", "", alias).lstrip(",") or "default"
