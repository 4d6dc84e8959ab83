"""Folder manifests: a second start re-reads nothing unchanged, changes are found, bad files
stay reported, damaged manifests are rebuilt, concurrent first scans do not race."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_folder_data import pairs, save, tone  # noqa: F401  (the `pairs` fixture)
from trainer.data import audio_io, manifest
from trainer.data.audio_io import AudioError
from trainer.data.folder import FolderMix, FolderPairs

SR = 16000


class Counting:
    """`audio_io.probe` that counts the files it reads (and can be slowed down)."""

    def __init__(self, delay: float = 0.0):
        self.paths: list[Path] = []
        self.delay, self.lock = delay, threading.Lock()

    def __call__(self, path: Path):
        with self.lock:
            self.paths.append(path)
        time.sleep(self.delay)
        try:
            return audio_io.probe(path, -60.0, SR)
        except AudioError as err:
            return err


def folder_of(tmp_path: Path, n: int = 6) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path / "speech"
    for i in range(n):
        save(folder / f"s{i}.wav", tone("f0", SR, 0.2 + 0.05 * i))
    sf.write(folder / "silent.wav", np.zeros(1600), SR)
    files = {p.stem: p for p in sorted(folder.glob("*.wav"))}
    return folder, files


def scan(folder, files, cache, probe):
    return manifest.scan("speech_dir", folder, files, probe, cache, -60.0, SR)


def test_a_second_scan_reads_nothing_and_gives_the_same_verdicts(tmp_path):
    folder, files = folder_of(tmp_path)
    first, second = Counting(), Counting()
    a = scan(folder, files, tmp_path / "cache", first)
    b = scan(folder, files, tmp_path / "cache", second)
    assert len(first.paths) == len(files) and second.paths == []
    assert {k: v for k, v in a.items() if not isinstance(v, AudioError)} == {
        k: v for k, v in b.items() if not isinstance(v, AudioError)
    }
    assert str(a["silent"]) == str(b["silent"]) and "silent" in str(b["silent"])  # a bad file stays bad
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    uncached = Counting()
    again = scan(folder, files, None, uncached)  # no cache dir: scans every file, writes nothing
    assert len(uncached.paths) == len(files) and str(again["silent"]) == str(a["silent"])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_changed_added_and_removed_files_are_found(tmp_path):
    folder, files = folder_of(tmp_path)
    cache = tmp_path / "cache"
    scan(folder, files, cache, Counting())
    save(folder / "s0.wav", tone("f0", SR, 0.5))  # rewritten: another size
    os.utime(folder / "s1.wav", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: another mtime
    save(folder / "new.wav", tone("f0", SR, 0.3))
    (folder / "s5.wav").unlink()
    files = {p.stem: p for p in sorted(folder.glob("*.wav"))}
    probe = Counting()
    verdicts = scan(folder, files, cache, probe)
    assert sorted(p.name for p in probe.paths) == ["new.wav", "s0.wav", "s1.wav"]
    assert verdicts["s0"].frames == int(0.5 * SR)
    table = json.loads(manifest.location(cache, folder, -60.0, SR).read_text())["files"]
    assert "s5.wav" not in table and "new.wav" in table and table["s0.wav"]["frames"] == int(0.5 * SR)
    again = Counting()
    scan(folder, files, cache, again)
    assert again.paths == []


@pytest.mark.parametrize("damage", ["garbage", "foreign", "malformed"])
def test_a_damaged_or_foreign_manifest_is_rebuilt_with_a_warning(tmp_path, damage, caplog):
    folder, files = folder_of(tmp_path)
    cache = tmp_path / "cache"
    scan(folder, files, cache, Counting())
    path = manifest.location(cache, folder, -60.0, SR)
    data = json.loads(path.read_text())
    if damage == "garbage":
        path.write_text('{"format": 1, "fol')
    elif damage == "foreign":
        path.write_text(json.dumps({**data, "folder": "/somewhere/else"}))
    else:
        path.write_text(json.dumps({**data, "files": {"s0.wav": {"frames": 3}}}))
    probe = Counting()
    with caplog.at_level(logging.WARNING, logger="trainer"):
        scan(folder, files, cache, probe)
    assert len(probe.paths) == len(files)  # nothing trusted
    assert any("damaged or foreign" in r.message for r in caplog.records)
    assert json.loads(path.read_text())["folder"] == data["folder"]  # rebuilt
    again = Counting()
    scan(folder, files, cache, again)
    assert again.paths == []


def test_concurrent_first_scans_read_each_file_once(tmp_path):
    folder, files = folder_of(tmp_path)
    probe = Counting(delay=0.05)  # long enough that both scans overlap
    results = []
    threads = [threading.Thread(target=lambda: results.append(scan(folder, files, tmp_path / "c", probe)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(probe.paths) == len(files)  # the second waited for the first, then read its manifest
    assert results[0].keys() == results[1].keys()
    assert not list((tmp_path / "c" / "manifests").glob(".tmp-*"))  # replaced atomically


def test_datasets_use_the_manifest_and_keep_the_bad_file_policy(tmp_path, pairs, caplog):  # noqa: F811
    clean, noisy = pairs
    (noisy / "f0.wav").write_bytes((noisy / "f0.wav").read_bytes()[:200])  # truncated
    cache = tmp_path / "cache"
    with pytest.raises(AudioError, match="f0.wav: truncated"):
        FolderPairs(str(clean), str(noisy), segment_seconds=0.1, cache_dir=str(cache))
    with pytest.raises(AudioError, match="f0.wav: truncated"):  # from the manifest, the same message
        FolderPairs(str(clean), str(noisy), segment_seconds=0.1, cache_dir=str(cache))
    with caplog.at_level(logging.INFO, logger="trainer"):
        kept = FolderPairs(str(clean), str(noisy), segment_seconds=0.1, bad_files="skip", cache_dir=str(cache))
    assert len(kept._train) + len(kept._valid) == 5
    assert any("from the manifest, 0 scanned" in r.message for r in caplog.records)
    mixed = FolderMix(str(clean), str(noisy), segment_seconds=0.1, bad_files="skip", cache_dir=str(cache))
    assert len(mixed._train) + len(mixed._valid) == 6  # its own manifests: clean/ as speech is fine
