"""The embedded corpus is rendered once: in parallel (the serial result, bit for bit), shared
in the process, cached on disk (atomic, locked, checksummed), and a damaged cache is
rendered again with a warning, never used."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT, TINY, cli, summary_json
from trainer.data import corpus
from trainer.data.synthetic import SyntheticSpeech

FAMILIES = ("white", "coloured", "shaped", "hum", "babble", "clicks")


def _spec(**changes) -> corpus.Spec:
    base = dict(
        seed=3,
        split=corpus.TRAIN,
        sample_rate=8000,
        clip_length=2000,
        clean=40,
        noises=36,
        families=FAMILIES,
        p_modulate=0.3,
        p_reverb=0.3,
    )
    return corpus.Spec(**{**base, **changes})


@pytest.fixture(autouse=True)
def fresh_process_share():
    """Each test starts as a new process would: nothing shared in memory yet."""
    corpus._SHARED.clear()
    yield
    corpus._SHARED.clear()


def _serial(spec: corpus.Spec) -> corpus.Corpus:
    clean = np.stack([corpus.render_clean(spec, i) for i in range(spec.clean)])
    return corpus.Corpus(clean, np.stack([corpus.render_noise(spec, clean, i) for i in range(spec.noises)]))


@pytest.mark.parametrize("split", [corpus.TRAIN, corpus.VALID])
def test_the_parallel_render_is_the_serial_one_bit_for_bit(split, monkeypatch):
    spec = _spec(split=split)
    assert spec.clean >= corpus._PARALLEL_MIN
    monkeypatch.setattr(corpus, "_workers", lambda: 2)  # forked workers even on a 1-core machine
    parallel = corpus.corpus(spec, None)
    expected = _serial(spec)
    assert np.array_equal(parallel.clean, expected.clean) and np.array_equal(parallel.noise, expected.noise)
    assert parallel.clean.dtype == np.float32 and parallel.noise.shape == (36, 2000)


def test_a_validation_babble_never_contains_its_own_utterance():
    spec = _spec(split=corpus.VALID, clean=2, noises=2, families=("babble",), p_reverb=0.0, p_modulate=0.0)
    clean = np.stack([corpus.render_clean(spec, i) for i in range(2)])
    # with two utterances, clip i's babble may only use utterance 1 - i: remove it and nothing is left
    for i in range(2):
        others = clean.copy()
        others[1 - i] = 0
        assert np.allclose(corpus.render_noise(spec, others, i), 0)
        assert not np.allclose(corpus.render_noise(spec, clean, i), 0)


def test_the_process_shares_a_corpus_and_a_new_process_reads_the_cache(tmp_path, monkeypatch, caplog):
    spec = _spec()
    with caplog.at_level(logging.INFO, logger="trainer.data.corpus"):
        first = corpus.corpus(spec, tmp_path)
    assert "rendered the training corpus" in caplog.text

    def fail(*args):
        raise AssertionError("rendered again")

    monkeypatch.setattr(corpus, "_render", fail)
    monkeypatch.setattr(corpus, "_read", fail)
    assert corpus.corpus(spec, tmp_path) is first  # the same process: the same arrays, no disk
    monkeypatch.undo()

    corpus._SHARED.clear()  # as a new process
    monkeypatch.setattr(corpus, "_render", fail)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainer.data.corpus"):
        second = corpus.corpus(spec, tmp_path)
    assert "read the training corpus from the cache" in caplog.text
    assert np.array_equal(second.clean, first.clean) and np.array_equal(second.noise, first.noise)


def test_the_key_names_every_setting_of_a_clip_and_the_code_that_renders_it(tmp_path, monkeypatch):
    base = _spec().key()
    for change in (
        dict(seed=4),
        dict(split=corpus.VALID),
        dict(sample_rate=16000),
        dict(clip_length=2001),
        dict(clean=41),
        dict(noises=35),
        dict(families=("white",)),
        dict(p_modulate=0.2),
        dict(p_reverb=0.1),
    ):
        assert _spec(**change).key() != base, change
    # mixing settings are not part of a clip: datasets that differ only there share a corpus
    a = SyntheticSpeech(snr_db=(0, 5), level_db=(-30, -20), corpus_size=4, noise_corpus_size=4)
    b = SyntheticSpeech(snr_db=(-5, 15), level_db=(-40, -10), corpus_size=4, noise_corpus_size=4)
    assert a.corpus(corpus.TRAIN) is b.corpus(corpus.TRAIN)
    edited = tmp_path / "voice.py"
    edited.write_text(corpus._SOURCES[0].read_text() + "\n# an edit\n")
    monkeypatch.setattr(corpus, "_SOURCES", (edited, *corpus._SOURCES[1:]))
    assert _spec().key() != base


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    ["flipped byte", "truncated", "missing array", "garbage meta", "foreign meta", "wrong shape"],
)
def test_a_damaged_cache_is_rendered_again_with_a_warning_never_used(tmp_path, caplog, damage):
    spec = _spec(clean=6, noises=5)
    good = corpus.corpus(spec, tmp_path)
    folder = tmp_path / f"synthetic-{spec.key()}"
    clean, meta = folder / "clean.npy", folder / "meta.json"
    if damage == "flipped byte":
        _flip_a_byte(clean)
    elif damage == "truncated":
        clean.write_bytes(clean.read_bytes()[:-100])
    elif damage == "missing array":
        (folder / "noise.npy").unlink()
    elif damage == "garbage meta":
        meta.write_text("{not json")
    elif damage == "foreign meta":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "spec": {"seed": 99}}))
    else:
        np.save(clean, np.zeros((6, 10), np.float32))
    corpus._SHARED.clear()
    with caplog.at_level(logging.INFO, logger="trainer.data.corpus"):
        again = corpus.corpus(spec, tmp_path)
    assert "damaged or foreign" in caplog.text and str(folder) in caplog.text
    assert "rendered the training corpus" in caplog.text
    assert np.array_equal(again.clean, good.clean) and np.array_equal(again.noise, good.noise)
    # rendered again means cached again: the next process reads a good cache
    corpus._SHARED.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainer.data.corpus"):
        corpus.corpus(spec, tmp_path)
    assert "read the training corpus from the cache" in caplog.text and "damaged or foreign" not in caplog.text


def test_a_writer_killed_before_its_checksums_leaves_nothing_trusted(tmp_path, caplog):
    spec = _spec(clean=4, noises=4)
    folder = tmp_path / f"synthetic-{spec.key()}"
    folder.mkdir()
    np.save(folder / "clean.npy", np.ones((4, 2000), np.float32))  # arrays written, meta.json not yet
    (folder / ".tmp-noise.npy.12345").write_bytes(b"half")  # a temporary of the killed writer
    with caplog.at_level(logging.INFO, logger="trainer.data.corpus"):
        got = corpus.corpus(spec, tmp_path)
    assert "rendered the training corpus" in caplog.text
    assert np.array_equal(got.clean, _serial(spec).clean)
    assert not list(folder.glob(".tmp-*"))


def test_an_unwritable_cache_costs_a_warning_not_the_run(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="trainer.data.corpus"):
        got = corpus.corpus(_spec(clean=3, noises=3), blocker / "cache")
    assert got.clean.shape == (3, 2000)
    assert "could not cache the corpus" in caplog.text


def test_concurrent_first_renders_render_once(tmp_path):
    """Two processes start on an empty cache at once: one renders, the other waits for its
    lock and reads what it wrote (joblib/submitit jobs, DDP ranks)."""
    script = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        from trainer.data import corpus
        real = corpus._render
        def counted(spec):  # each render leaves a mark, whatever the log says
            with open({str(tmp_path / "renders")!r}, "a") as f:
                f.write("x")
            return real(spec)
        corpus._render = counted
        spec = corpus.Spec(5, 0, 8000, 4000, 48, 40, ("white", "babble", "hum"), 0.3, 0.3)
        c = corpus.corpus(spec, {str(tmp_path)!r})
        print("sum", float(c.clean.sum()) + float(c.noise.sum()))
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert (tmp_path / "renders").read_text() == "x", outs  # one render in two processes
    assert sum("read the training corpus from the cache" in o for o in outs) == 1, outs
    assert len({o.strip().splitlines()[-1] for o in outs}) == 1  # the same data in both


def test_a_multirun_renders_once_and_its_relaunch_reads_the_cache(tmp_path):
    cache = tmp_path / "cache"
    job = [*TINY, "trainer.epochs=1", "data.corpus_size=8", f"data.cache_dir={cache}"]
    first = cli("-m", "optim=adamw,sgd,adam", *job, f"hydra.sweep.dir={tmp_path / 'one'}", check=True)
    log = first.stdout + first.stderr
    assert log.count("rendered the training corpus") == 1 and log.count("rendered the validation corpus") == 1
    written = {p: p.stat().st_mtime_ns for p in [*cache.rglob("*.npy"), *cache.rglob("meta.json")]}
    again = cli("-m", "optim=adamw,sgd,adam", *job, f"hydra.sweep.dir={tmp_path / 'two'}", check=True)
    log = again.stdout + again.stderr
    assert "rendered the" not in log and log.count("read the training corpus from the cache") == 1
    assert len(written) == 6 and all(p.stat().st_mtime_ns == t for p, t in written.items())  # none written again
    # the cache changes no result: the same objective in both launches
    for name in ("optim=adamw", "optim=sgd", "optim=adam"):
        a = summary_json(tmp_path / "one" / name)
        b = summary_json(tmp_path / "two" / name)
        assert a["status"] == b["status"] == "completed" and a["objective"] == b["objective"], name
