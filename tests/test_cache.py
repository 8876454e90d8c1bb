"""The disk cache only saves time: a write that fails costs no result, an entry that
cannot be read is rebuilt, and the folder stays under its cap."""

import errno
import io
import json
import logging
import os
import subprocess
import sys
import time

import pytest
import torch

from fedcore.engine import cache as engine_cache
from fedcore.engine.cache import ResultCache, max_cache_bytes, model_entry_reader
from fedcore.learning.models import build_model

from .conftest import REPO


def cache_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fedcore.cache"]


def model_entry(kind="mlp"):
    return {"weights": build_model(0, kind).state_dict(), "losses": [0.5, 0.25]}


# ------------------------------------------------------------------ writes


def test_a_cache_path_that_is_a_file_costs_one_line_and_no_result(tmp_path, caplog):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    cache = ResultCache(blocker / "results")
    with caplog.at_level(logging.WARNING):
        cache.put("federated", "a", {"accuracy": 0.9})  # NotADirectoryError inside: no raise
        cache.put("federated", "b", {"accuracy": 0.8})
        assert cache.get("federated", "a") is None
    assert cache_lines(caplog) == [
        f"fedcore: cache: cannot write to {blocker / 'results'} (Not a directory: "
        f"{blocker / 'results' / 'federated'}); results are not cached until it can be written, "
        "the runs go on"
    ]  # once, not once per entry; and the read of a folder that cannot exist says nothing


def test_a_full_disk_costs_one_line_until_a_write_works_again(tmp_path, monkeypatch, caplog):
    cache = ResultCache(tmp_path)
    real = engine_cache.atomic_file

    def full(path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(engine_cache, "atomic_file", full)
    with caplog.at_level(logging.WARNING):
        cache.put("isolated", "a", model_entry())
        cache.put("isolated", "b", model_entry())
        monkeypatch.setattr(engine_cache, "atomic_file", real)
        cache.put("isolated", "c", model_entry())  # the disk has room again
        monkeypatch.setattr(engine_cache, "atomic_file", full)
        cache.put("isolated", "d", model_entry())
    lines = cache_lines(caplog)
    assert len(lines) == 2 and all("(No space left on device: " in line for line in lines)
    assert lines[0].startswith(f"fedcore: cache: cannot write to {tmp_path} (")
    assert cache.get("isolated", "c") is not None and cache.get("isolated", "a") is None


def test_an_entry_is_written_without_fsync(tmp_path, monkeypatch):
    """Checked when read, a cache entry need not be flushed (results files are)."""
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    ResultCache(tmp_path).put("federated", "k", {"accuracy": 0.9})
    assert synced == [] and ResultCache(tmp_path).get("federated", "k") == {"accuracy": 0.9}


# ------------------------------------------------------------------- reads


def damage_emptied(path):
    path.write_bytes(b"")


def damage_truncated(path):
    path.write_bytes(path.read_bytes()[:100])


def damage_garbage(path):
    path.write_bytes(b"\x80\x02garbage" * 50)


def damage_wrong_type(path):
    buffer = io.BytesIO()
    torch.save([1, 2, 3], buffer)  # loads fine, but is no model entry
    path.write_bytes(buffer.getvalue())


def damage_wrong_shapes(path):
    buffer = io.BytesIO()
    torch.save(model_entry("2nn"), buffer)  # another model's weights
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (damage_emptied, "(EOFError)"),
        (damage_truncated, "(RuntimeError: PytorchStreamReader failed reading zip archive"),
        (damage_garbage, "(UnpicklingError: "),
        (damage_wrong_type, "(TypeError: "),
        (damage_wrong_shapes, "(RuntimeError: Error(s) in loading state_dict for "),
    ],
)
def test_an_entry_that_cannot_be_read_is_deleted_with_one_line(tmp_path, caplog, damage, why):
    cache = ResultCache(tmp_path)
    cache.put("isolated", "k", model_entry())
    (path,) = (tmp_path / "isolated").iterdir()
    damage(path)
    read = model_entry_reader(build_model(0, "mlp"))
    with caplog.at_level(logging.WARNING):
        assert cache.get("isolated", "k", read) is None
        assert cache.get("isolated", "k", read) is None  # gone: a plain miss, no second line
    (line,) = cache_lines(caplog)
    assert line.startswith(f"fedcore: cache: {path} could not be read {why}")
    assert line.endswith("; deleted; computing it again") and "\n" not in line
    assert not path.exists()
    cache.put("isolated", "k", model_entry())  # the rebuilt entry
    entry = cache.get("isolated", "k", read)
    assert entry is not None and entry["losses"] == [0.5, 0.25]


def test_a_missing_entry_is_a_plain_miss(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert ResultCache(tmp_path).get("federated", "none") is None
    assert cache_lines(caplog) == []


# ---------------------------------------------------------------- the cap


def entries_by_key(cache, keys):
    return {key: cache._path("federated", key) for key in keys}


def test_the_least_recently_used_entries_go_first(tmp_path):
    value = {"history": list(range(2000))}
    size = len(_saved(value))
    cache = ResultCache(tmp_path, max_bytes=3 * size)
    paths = entries_by_key(cache, "abcd")
    for age, key in zip((400, 300, 200), "abc", strict=True):
        cache.put("federated", key, value)
        stamp = time.time() - age
        os.utime(paths[key], (stamp, stamp))  # a before b before c
    assert cache.get("federated", "a") == value  # read: now the most recent
    cache.put("federated", "d", value)  # four entries, room for three
    assert {key for key, path in paths.items() if path.exists()} == {"a", "c", "d"}


def test_a_cap_of_zero_keeps_nothing_and_stale_temp_files_go(tmp_path):
    cache = ResultCache(tmp_path, max_bytes=0)
    folder = tmp_path / "federated"
    folder.mkdir()
    stale, fresh = folder / ".x.pt.1.tmp", folder / ".y.pt.2.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    old = time.time() - 2 * engine_cache.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))  # left by a killed writer
    cache.put("federated", "k", {"accuracy": 0.9})
    assert cache.get("federated", "k") is None
    assert [p.name for p in folder.iterdir()] == [fresh.name]  # a write going on is left alone


def test_the_cap_scans_once_per_hundredth_of_it_written(tmp_path, monkeypatch):
    value = {"history": list(range(2000))}
    size = len(_saved(value))
    cache = ResultCache(tmp_path, max_bytes=100 * size)
    scans = []
    monkeypatch.setattr(cache, "evict", lambda: scans.append(1))
    for key in range(5):
        cache.put("federated", str(key), value)
    assert len(scans) == 5  # each write is a hundredth: a scan each
    cache = ResultCache(tmp_path, max_bytes=1000 * size)
    scans.clear()
    monkeypatch.setattr(cache, "evict", lambda: scans.append(1))
    for key in range(25):
        cache.put("federated", str(key), value)
    assert len(scans) == 3  # the first write, then after every 10


def _saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("text", "expected", "logged"),
    [
        ("", 5e9, False),
        ("0.5", 5e8, False),
        ("0", 0, False),
        ("lots", 5e9, True),
        ("-1", 5e9, True),
    ],
)
def test_the_cap_comes_from_the_environment(monkeypatch, caplog, text, expected, logged):
    monkeypatch.setenv("FEDCORE_CACHE_MAX_GB", text)
    with caplog.at_level(logging.WARNING):
        assert max_cache_bytes() == int(expected)
    lines = cache_lines(caplog)
    assert lines == (
        [f"fedcore: cache: FEDCORE_CACHE_MAX_GB={text!r} is not a size in GB; using 5 GB"]
        if logged
        else []
    )


# --------------------------------------------------------- through the CLI


def run_all(mnist_dir, cache_dir, out):
    return subprocess.run(
        [sys.executable, "-m", "fedcore", "run", "--phase", "all", "--rounds", "1",
         "--epochs", "1", "--seed", "11", "--data-dir", str(mnist_dir), "--out", str(out)],
        cwd=REPO, env=os.environ | {"FEDCORE_CACHE_DIR": str(cache_dir)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def numbers(path):
    data = json.loads(path.read_text())
    return (
        [c["accuracy"] for c in data["isolated"]],
        data["federated"]["accuracy"],
        data["centralized"]["accuracy"],
    )


def test_a_damaged_cache_is_rebuilt_and_what_is_cached_is_not_rewritten(mnist_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    first = run_all(mnist_dir, cache_dir, tmp_path / "first.json")
    assert first.returncode == 0, first.stderr
    entries = sorted((cache_dir / "results").glob("*/*.pt"))
    assert [p.parent.name for p in entries].count("isolated") == 3 and len(entries) == 5
    emptied = next(p for p in entries if p.parent.name == "isolated")
    garbage = next(p for p in entries if p.parent.name == "federated")
    emptied.write_bytes(b"")
    garbage.write_bytes(b"garbage")
    (tensors,) = (cache_dir / "mnist").glob("*/train_x.npy")
    tensors.write_bytes(b"")  # the issue's `EOFError: No data left in file`
    untouched = {p: p.stat().st_ino for p in entries if p not in (emptied, garbage)}

    second = run_all(mnist_dir, cache_dir, tmp_path / "second.json")
    assert second.returncode == 0, second.stderr
    assert numbers(tmp_path / "second.json") == numbers(tmp_path / "first.json")
    lines = [line for line in second.stderr.splitlines() if line.startswith("fedcore: cache:")]
    emptied_line = (
        f"fedcore: cache: {emptied} could not be read (EOFError); deleted; computing it again"
    )
    (garbage_line,) = [line for line in lines if line != emptied_line]
    assert len(lines) == 2 and emptied_line in lines
    assert garbage_line.startswith(f"fedcore: cache: {garbage} could not be read (Unpickling")
    assert garbage_line.endswith("...); deleted; computing it again")  # PyTorch's paragraph, cut
    assert {p: p.stat().st_ino for p in untouched} == untouched  # read, not written again
    assert emptied.stat().st_size > 0 and garbage.stat().st_size > 0  # rebuilt
    assert tensors.stat().st_size > 0  # the data cache rebuilt too


def test_an_unwritable_cache_still_gives_the_results(mnist_dir, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    done = run_all(mnist_dir, blocker, tmp_path / "results.json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if "cache" in line] == [
        f"fedcore: cache: cannot write to {blocker / 'results'} (Not a directory: "
        f"{blocker / 'results' / 'isolated'}); results are not cached until it can be written, "
        "the runs go on"
    ]  # the isolated, federated and centralized entries: one line
    assert len(numbers(tmp_path / "results.json")[0]) == 3
