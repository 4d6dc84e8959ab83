"""An experiment's identity and its name, against hand-written values: the hash encoding,
the seed-free group, the alias's shortening and splitting."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import FrozenInstanceError, dataclass

import pytest
from omegaconf import OmegaConf

from trainer import identity
from trainer.identity import MAX_ALIAS, alias_without_seed, canonical, shorten, split_alias, without

HASH = "0123456789abcdef" * 4


def test_the_encoding_tags_every_type():
    assert json.loads(canonical({"a": 1, "b": [1.5, None, True, "x"]})) == [
        "dict",
        [
            [["str", "a"], ["int", "1"]],
            [["str", "b"], ["list", [["float", "1.5"], ["none"], ["bool", True], ["str", "x"]]]],
        ],
    ]
    with pytest.raises(TypeError, match="cannot hash a config value of type set"):
        canonical({"a": {1}})


def test_the_encoding_is_pinned_because_stored_hashes_must_stay_valid():
    # runs indexes and summary.json files keep these hashes: a change of encoding would
    # orphan every finished run, so the exact bytes are part of the contract
    text = '["dict",[[["str","é"],["str","ü"]],[["str","a"],["int","1"]]]]'  # keys sorted as escaped JSON
    assert canonical({"é": "ü", "a": 1}) == text
    assert identity.digest({"é": "ü", "a": 1}) == hashlib.sha256(text.encode()).hexdigest()
    # the order of the keys is not part of it, also where two values are equal
    assert canonical({"a": 1, "b": 1}) == canonical({"b": 1, "a": 1})


class Precision(enum.Enum):
    fp32 = 1


@dataclass
class Job:
    precision: Precision = Precision.fp32
    seed: int = 0


def test_the_job_config_leaves_hydra_out_resolves_and_spells_enums_as_strings():
    cfg = OmegaConf.create({"hydra": {"run": {"dir": "x"}}, "a": {"x": 1}, "b": "${a}", "zeta": "${a.x}"})
    assert identity.job_config(cfg) == {"a": {"x": 1}, "b": {"x": 1}, "zeta": 1}
    assert identity.job_config(cfg, resolve=False) == {"a": {"x": 1}, "b": "${a}", "zeta": "${a.x}"}
    assert (
        identity.of(cfg, "").hash == identity.of(OmegaConf.create({"a": {"x": 1}, "b": {"x": 1}, "zeta": 1}), "").hash
    )
    typed = OmegaConf.create({"job": OmegaConf.structured(Job)})
    assert identity.job_config(typed) == {"job": {"precision": "fp32", "seed": 0}}
    assert (
        identity.of(typed, "").hash == identity.of(OmegaConf.create({"job": {"precision": "fp32", "seed": 0}}), "").hash
    )
    with pytest.raises(FrozenInstanceError):  # an identity does not change once taken
        identity.of(typed, "").hash = "0"  # type: ignore[misc]


def test_without_drops_dotted_keys_and_ignores_absent_ones():
    config = {"trainer": {"device": "cpu", "seed": 1}, "outputs": "o", "x": 2}
    assert without(config, ("trainer.device", "outputs", "nope.deep")) == {"trainer": {"seed": 1}, "x": 2}
    assert config["trainer"]["device"] == "cpu"  # a copy


def test_the_seed_and_what_follows_it_leave_the_group_but_not_the_hash():
    def of(seed):
        return identity.of(OmegaConf.create({"trainer": {"seed": seed}, "data": {"seed": "${trainer.seed}"}}), "")

    a, b = of(0), of(1)
    assert a.hash != b.hash and a.group == b.group and (a.seed, b.seed) == (0, 1)

    def listed(seed):  # a seed inside a list follows it too
        cfg = {"trainer": {"seed": seed}, "aug": {"seeds": [7, "${trainer.seed}"]}}
        return identity.of(OmegaConf.create(cfg), "")

    assert listed(0).hash != listed(1).hash and listed(0).group == listed(1).group
    assert listed(0).group != a.group
    assert a.alias == "default" and a.short == a.hash[: identity.SHORT]
    device = identity.of(OmegaConf.create({"trainer": {"seed": 0, "device": "cuda"}, "data": {"seed": 0}}), "x")
    assert device.hash == of(0).hash  # a result-neutral key is not part of the identity


def test_a_short_alias_is_kept_and_a_long_one_is_cut_at_whole_overrides_with_the_hash():
    assert shorten("optim=sgd", HASH) == "optim=sgd"
    exactly = "a=" + "x" * (MAX_ALIAS - 2)
    assert shorten(exactly, HASH) == exactly and MAX_ALIAS == 64
    assert shorten(exactly + "x", HASH) != exactly + "x"
    parts = [f"key{i}=value{i}" for i in range(8)]  # 12 characters each
    cut = shorten(",".join(parts), HASH)
    # four overrides (51 characters with their commas), then +4 and the hash: 64 at most
    assert cut == ",".join(parts[:4]) + ",+4-0123456789" and len(cut) <= MAX_ALIAS
    # the kept overrides, the count and the hash fill the 64 characters exactly
    parts = [f"key{i}=value{i}" for i in range(3)] + ["key3=value3456"] + [f"key{i}=value{i}" for i in range(4, 8)]
    assert shorten(",".join(parts), HASH) == ",".join(parts[:4]) + ",+4-0123456789"
    assert len(shorten(",".join(parts), HASH)) == 64
    tens = [f"key{i}=val0{i}" for i in range(8)]  # 10 characters: five would be 68 with the count and hash
    assert shorten(",".join(tens), HASH) == ",".join(tens[:4]) + ",+4-0123456789"
    long = "data.families=[" + ",".join(["white"] * 20) + "]"
    assert shorten(f"{long},b=1", HASH) == "b=1,+1-0123456789"  # what does not fit is skipped, in order
    one = "k=" + "v" * 100
    assert shorten(one, HASH) == one[: MAX_ALIAS - 12] + "~-0123456789" and len(shorten(one, HASH)) == MAX_ALIAS


def test_an_alias_splits_at_commas_outside_brackets_and_quotes():
    assert split_alias("a=[1,2],b='x,y',c={d:1,e:2},f=(3,4)") == ["a=[1,2]", "b='x,y'", "c={d:1,e:2}", "f=(3,4)"]
    assert split_alias("solo") == ["solo"]
    assert split_alias("a='x y,z',+b=1e+3,c=2") == ["a='x y,z'", "+b=1e+3", "c=2"]


def test_the_group_label_drops_the_seed_wherever_it_is():
    assert alias_without_seed("optim=sgd,trainer.seed=2") == "optim=sgd"
    assert alias_without_seed("trainer.seed=2,optim=sgd") == "optim=sgd"
    assert alias_without_seed("+trainer.seed=3") == "default"
    assert alias_without_seed("optim=sgd,trainer.seeds=2") == "optim=sgd,trainer.seeds=2"
