"""The jobs of a grid sweep: the product of the swept values, with paired lists (`zip`)
and combinations left out (`exclude`).

    hydra.sweeper.zip: [[precision, compile]]      # stepped together: one axis, not two
    hydra.sweeper.exclude:                          # a job matching every key of a rule is left out
      - {precision: fp32, compile: default}
      - {compile: "!none", precision: "!amp_bf16"}  # "!v": anything but v; compile only with bf16
      - {precision: [amp_fp16, fp32], precision.matmul: high}   # a list: any of them

Keys are the overrides' keys as written (`precision`, `precision.matmul`, `+search`; the
`+`/`~` prefixes may be left out); values are compared as the command line spells them.
"""

# No `from __future__ import annotations`: see __init__.py.
import itertools
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra.core.override_parser.types import Override
from hydra.errors import HydraException


def _key(override: Override) -> str:
    return override.get_key_element().lstrip("+~")


def _spelled(value: Any) -> str:
    """A value as one spelling: YAML's true, Hydra's True and the command line's true are one."""
    text = "null" if value is None else str(value)
    return text.lower() if text.lower() in ("true", "false", "null", "none") else text


def axes(overrides: Sequence[Override]) -> Dict[str, List[str]]:
    """Each override's key and its `key=value` strings (one for a fixed value), in order."""
    out: Dict[str, List[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise HydraException(f"{key}: a grid sweep takes lists of values, not {override.value_type.name}")
            out[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            out[key] = [f"{key}={override.get_value_element_as_str()}"]
    return out


def _known(key: str, found: Dict[str, List[str]], what: str) -> str:
    names = {k.lstrip("+~"): k for k in found}
    key = key.lstrip("+~")
    if key not in names:
        raise HydraException(
            f"hydra.sweeper.{what} names {key!r}, which this sweep does not set (it sets: {', '.join(names)})"
        )
    return names[key]


def _matches(job: Dict[str, str], rule: Dict[str, Any]) -> bool:
    """Whether a job (key -> `key=value`) matches every key of an exclusion rule."""
    for key, wanted in rule.items():
        value = _spelled(job[key].split("=", 1)[1])
        options = [_spelled(v) for v in (wanted if isinstance(wanted, (list, tuple)) else [wanted])]
        negated = [_spelled(o[1:]) for o in options if o.startswith("!")]
        plain = [o for o in options if not o.startswith("!")]
        if negated and value in negated or plain and value not in plain:
            return False
    return True


def expand(
    overrides: Sequence[Override], zip_keys: Optional[Sequence[Sequence[str]]], exclude: Optional[Sequence[Any]]
) -> List[List[str]]:
    """Every job's overrides: the product over the axes, a zipped group being one axis."""
    found = axes(overrides)
    groups: List[List[str]] = []
    for group in zip_keys or []:
        group = [_known(str(k), found, "zip") for k in group]
        lengths = {k: len(found[k]) for k in group}
        if len(set(lengths.values())) > 1:
            raise HydraException(
                f"hydra.sweeper.zip: {', '.join(f'{k} has {n} values' for k, n in lengths.items())}; "
                "zipped lists step together and need the same length"
            )
        if any(k in g for g in groups for k in group) or len(set(group)) < len(group):
            raise HydraException(f"hydra.sweeper.zip: {group} shares a key with another group")
        groups.append(group)
    zipped = {k: g for g in groups for k in g}
    lists: List[List[Tuple[Tuple[str, str], ...]]] = []  # per axis: its choices, each ((key, item), ...)
    for key in found:
        if key not in zipped:
            lists.append([((key, v),) for v in found[key]])
        elif zipped[key][0] == key:  # the group's axis, where its first key stands
            lists.append([tuple(zip(zipped[key], items)) for items in zip(*(found[k] for k in zipped[key]))])
    jobs = [dict(pair for part in combo for pair in part) for combo in itertools.product(*lists)]
    rules = []
    for rule in exclude or []:
        if not isinstance(rule, dict) or not rule:
            raise HydraException(f"hydra.sweeper.exclude: {rule!r} is not a mapping of keys to values")
        rules.append({_known(str(k), found, "exclude"): v for k, v in rule.items()})
    kept = [job for job in jobs if not any(_matches(job, rule) for rule in rules)]
    return [[job[k] for k in found] for job in kept]


def batches(jobs: List[List[str]], max_batch_size: Optional[int]) -> List[List[List[str]]]:
    if not max_batch_size:
        return [jobs]
    return [jobs[i : i + max_batch_size] for i in range(0, len(jobs), max_batch_size)]
