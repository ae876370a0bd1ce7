"""What the job decides before and as its JVM starts: the compiler for the run's size, the
run's sizing, and the one listing of the input and reading of the state it plans from."""

from __future__ import annotations

import dataclasses
import json
import os
import types
from urllib.parse import unquote

import pytest
from jobrun import run_settings

import etl

pytestmark = pytest.mark.timeout(600)


def odd_input(root):
    """Input files with names and places a listing can get wrong."""
    files = {
        "song_data/A/B/C/TRA ü %20.json": "{}\n",
        "song_data/A/.DS_Store": "x",
        "log_data/2018/11/2018-11-01-events.json": "{}\n{}\n",
        "log_data/2018/11/2018-11-02-events.json.gz": "not really gzip",
        "log_data/notes.txt": "hello",
        "log_data/_tmp/2018-11-03-events.json": "{}\n",
        "log_data/year=2018/2018-11-04-events.json": "{}\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def relative(root, uris: list[str]) -> list[str]:
    prefix = f"file:{root}/"
    assert all(uri.startswith("file:/") for uri in uris), uris
    return sorted(unquote(uri)[len(prefix) :] for uri in uris)


def test_the_listing_takes_what_the_readers_read_and_names_the_rest(spark, tmp_path):
    root = odd_input(tmp_path / "in")
    listing = etl.list_input(spark, str(root))
    assert relative(root, [file.uri for file in listing.files]) == [
        "log_data/2018/11/2018-11-01-events.json",
        "log_data/2018/11/2018-11-02-events.json.gz",
        "log_data/year=2018/2018-11-04-events.json",
        "song_data/A/B/C/TRA ü %20.json",
    ]
    assert relative(root, listing.skipped) == [
        "log_data/_tmp/2018-11-03-events.json",
        "log_data/notes.txt",
        "song_data/A/.DS_Store",
    ]
    # the names are Spark's own (_metadata.file_path), which the state and the daily runs compare
    read = spark.read.text(str(root / "song_data"), recursiveFileLookup=True).select("_metadata.file_path")
    assert [row[0] for row in read.collect()] == [file.uri for file in listing.of(etl.SONGS_DATASET)]


def test_the_state_gives_back_what_the_runs_processed(spark, tmp_path):
    root = odd_input(tmp_path / "in")
    runs = tmp_path / "out" / etl.STATE_DIR / etl.RUNS_DIR
    runs.mkdir(parents=True)
    listing = etl.list_input(spark, str(root))
    assert etl.read_state(spark, str(tmp_path / "out")) is None
    for number, files in enumerate((listing.files[:2], listing.files[2:])):
        run_id = f"2018110{number}T000000Z-abcdef"
        manifest = {"state_version": etl.STATE_VERSION, "run_id": run_id, "files": f"{run_id}{etl.FILES_SUFFIX}"}
        (runs / f"{run_id}{etl.MANIFEST_SUFFIX}").write_text(json.dumps(manifest))
        (runs / manifest["files"]).write_text("".join(json.dumps(file.entry(run_id)) + "\n" for file in files))
    state = etl.read_state(spark, str(tmp_path / "out"))
    assert [run["run_id"] for run in state.runs] == ["20181100T000000Z-abcdef", "20181101T000000Z-abcdef"]
    assert len(state.processed) == len(listing.files) and etl.unprocessed(listing, state) == []
    changed = root / "log_data/2018/11/2018-11-01-events.json"
    changed.write_text("{}\n{}\n{}\n")
    assert relative(root, [file.uri for file in etl.unprocessed(etl.list_input(spark, str(root)), state)]) == [
        "log_data/2018/11/2018-11-01-events.json"
    ]


def test_state_of_another_version_is_named_in_the_message(spark, tmp_path):
    runs = tmp_path / etl.STATE_DIR / etl.RUNS_DIR
    runs.mkdir(parents=True)
    (runs / f"x{etl.MANIFEST_SUFFIX}").write_text(json.dumps({"state_version": 99, "files": "x.files.jsonl"}))
    with pytest.raises(etl.UserError, match=r"\(state_version 99\)"):
        etl.read_state(spark, str(tmp_path))


def test_only_a_run_known_to_be_small_gets_the_short_run_jit(tmp_path, monkeypatch):
    root = odd_input(tmp_path / "in")
    small = run_settings(root, tmp_path / "out")
    assert etl.jit_options(small) == etl.SHORT_RUN_JIT_OPTIONS
    assert etl.jit_options(dataclasses.replace(small, input_uri="s3a://bucket/in")) == ()
    daily = dataclasses.replace(small, incremental=True)
    assert etl.jit_options(daily) == etl.SHORT_RUN_JIT_OPTIONS, "no state yet: everything is new, and small"
    monkeypatch.setattr(etl, "SHORT_RUN_INPUT_BYTES", 10)  # the same input, now above the limit
    assert etl.jit_options(small) == ()
    runs = tmp_path / "out" / etl.STATE_DIR / etl.RUNS_DIR
    runs.mkdir(parents=True)
    (runs / f"run{etl.MANIFEST_SUFFIX}").write_text("{}")
    later = (runs / f"run{etl.MANIFEST_SUFFIX}").stat().st_mtime + 60
    os.utime(root / "log_data/2018/11/2018-11-01-events.json", (later, later))  # 6 bytes changed since the last run
    assert etl.jit_options(daily) == etl.SHORT_RUN_JIT_OPTIONS, "a daily run counts what changed since"
    assert etl.local_input_bytes(daily) == 6


def test_shuffle_partitions_and_the_static_plan_follow_the_input_size():
    nothing_set = {}.__contains__
    day = etl.run_sizing(15 << 20, 2, nothing_set)
    assert day == {etl.SHUFFLE_PARTITIONS: "2", etl.ADAPTIVE_EXECUTION: "false"}, "a day of logs: one per core"
    assert etl.run_sizing(200 << 20, 2, nothing_set) == {etl.SHUFFLE_PARTITIONS: "4"}, "a few per core, adaptive"
    assert etl.run_sizing(10 << 30, 2, nothing_set) == {etl.SHUFFLE_PARTITIONS: "80"}, "one per 128 MB"
    assert etl.run_sizing(15 << 20, 2, {etl.SHUFFLE_PARTITIONS, etl.ADAPTIVE_EXECUTION}.__contains__) == {}


def test_a_session_without_the_jvm_handles_is_told_what_the_job_needs():
    """The private handles of PySpark the job uses are all read in driver_jvm; without them, one clear line."""
    connect_like = types.SimpleNamespace(sparkContext=types.SimpleNamespace())
    with pytest.raises(etl.UserError, match="classic Spark session"):
        etl.hadoop_path(connect_like, "file:/tmp")
