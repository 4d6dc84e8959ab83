"""An experiment's identity and its name, against hand-written values: the hash encoding,
the seed-free group, the alias's shortening and splitting."""

from __future__ import annotations

import json

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


def test_without_drops_dotted_keys_and_ignores_absent_ones():
    config = {"trainer": {"device": "cpu", "seed": 1}, "outputs": "o", "x": 2}
    assert without(config, ("trainer.device", "outputs", "nope.deep")) == {"trainer": {"seed": 1}, "x": 2}
    assert config["trainer"]["device"] == "cpu"  # a copy


def test_the_seed_and_what_follows_it_leave_the_group_but_not_the_hash():
    def of(seed):
        return identity.of(OmegaConf.create({"trainer": {"seed": seed}, "data": {"seed": "${trainer.seed}"}}), "")

    a, b = of(0), of(1)
    assert a.hash != b.hash and a.group == b.group and (a.seed, b.seed) == (0, 1)
    assert a.alias == "default" and a.short == a.hash[: identity.SHORT]
    device = identity.of(OmegaConf.create({"trainer": {"seed": 0, "device": "cuda"}, "data": {"seed": 0}}), "x")
    assert device.hash == of(0).hash  # a result-neutral key is not part of the identity


def test_a_short_alias_is_kept_and_a_long_one_is_cut_at_whole_overrides_with_the_hash():
    assert shorten("optim=sgd", HASH) == "optim=sgd"
    exactly = "a=" + "x" * (MAX_ALIAS - 2)
    assert shorten(exactly, HASH) == exactly
    parts = [f"key{i}=value{i}" for i in range(8)]  # 12 characters each
    cut = shorten(",".join(parts), HASH)
    # four overrides (51 characters with their commas), then +4 and the hash: 64 at most
    assert cut == ",".join(parts[:4]) + ",+4-0123456789" and len(cut) <= MAX_ALIAS
    long = "data.families=[" + ",".join(["white"] * 20) + "]"
    assert shorten(f"{long},b=1", HASH) == "b=1,+1-0123456789"  # what does not fit is skipped, in order
    one = "k=" + "v" * 100
    assert shorten(one, HASH) == one[: MAX_ALIAS - 12] + "~-0123456789" and len(shorten(one, HASH)) == MAX_ALIAS


def test_an_alias_splits_at_commas_outside_brackets_and_quotes():
    assert split_alias("a=[1,2],b='x,y',c={d:1,e:2},f=(3,4)") == ["a=[1,2]", "b='x,y'", "c={d:1,e:2}", "f=(3,4)"]
    assert split_alias("solo") == ["solo"]


def test_the_group_label_drops_the_seed_wherever_it_is():
    assert alias_without_seed("optim=sgd,trainer.seed=2") == "optim=sgd"
    assert alias_without_seed("trainer.seed=2,optim=sgd") == "optim=sgd"
    assert alias_without_seed("+trainer.seed=3") == "default"
    assert alias_without_seed("optim=sgd,trainer.seeds=2") == "optim=sgd,trainer.seeds=2"
