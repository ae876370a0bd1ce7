"""A daily run that crashes anywhere, is killed, or meets another run at the same output.

After a crash at any point, the next --incremental run ends with exactly the tables of an
uninterrupted sequence (nothing lost, nothing counted twice); a second run into the same
output stops at once; a lock left by a dead run is taken over once it is stale.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from jobrun import ETL, REPO, run_job, write_config
from test_incremental import assert_same_tables, day_files, land, make_month, rejects, settings

import etl

pytestmark = pytest.mark.timeout(1200)

# Every point a run that adds a day file and new song files passes, in order: the stages,
# then after each output of the load, then between the last output and the commit.
LOAD_OUTPUTS = (
    "rejected:events",
    "songs",
    "artists",
    "state:catalogue",
    "songplays",
    "time",
    "users",
    "state:users",
)
FAULT_POINTS = ("extract", "transform", "load", *(f"load:{label}" for label in LOAD_OUTPUTS), "commit")
# Crashed on in the matrix below: each stage, after the first table, in the middle of the
# load, after the last table, and just before the commit.
CRASH_POINTS = ("extract", "transform", "load", "load:songs", "load:songplays", "load:state:users", "commit")


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> dict:
    """Day 1 published by a first run; day 2 and a batch of new songs waiting in the feed.

    The reference is one full run over everything the feed then holds.
    """
    base = tmp_path_factory.mktemp("safety")
    source = make_month(base / "source", days=3, songs=40, seed=5)
    extra = make_month(base / "extra", days=1, songs=25, seed=6)
    feed = base / "feed"
    shutil.copytree(source / "song_data", feed / "song_data")
    first, second = day_files(source)[:2]
    land(source, feed, first)
    return {"source": source, "extra": extra, "feed": feed, "second": second}


@pytest.fixture(scope="module")
def after_day_one(spark, days, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("day1") / "out"
    etl.run(spark, settings(days["feed"], output))
    land(days["source"], days["feed"], days["second"])
    for path in (days["extra"] / "song_data").rglob("*.json"):
        land(days["extra"], days["feed"], path)
    return output


@pytest.fixture(scope="module")
def reference(spark, days, after_day_one, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("reference") / "out"
    etl.run(spark, settings(days["feed"], output, incremental=False))
    return output


def test_the_fault_points_are_the_runs_own(spark, days, after_day_one, tmp_path, caplog):
    """Every listed point is passed by such a run, so no parametrised case below is vacuous."""
    output = tmp_path / "out"
    shutil.copytree(after_day_one, output)
    with caplog.at_level(logging.DEBUG, logger=etl.log.name):
        etl.run(spark, settings(days["feed"], output))
    wrote = [record.getMessage().split()[1] for record in caplog.records if record.getMessage().startswith("wrote ")]
    assert [f"load:{label}" for label in wrote] == [point for point in FAULT_POINTS if point.startswith("load:")]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_anywhere_is_repaired_by_the_next_run(
    spark, days, after_day_one, reference, tmp_path, monkeypatch, point
):
    output = tmp_path / "out"
    shutil.copytree(after_day_one, output)
    monkeypatch.setenv(etl.FAULT_INJECTION_VARIABLE, point)
    with pytest.raises(RuntimeError, match=f"fault injected at {point}"):
        etl.run(spark, settings(days["feed"], output, checks=False))  # the checks stop no run here
    monkeypatch.delenv(etl.FAULT_INJECTION_VARIABLE)
    assert not (output / etl.LOCK_NAME).exists(), "a failed run must release its lock"

    report = etl.run(spark, settings(days["feed"], output, checks=False))
    assert report["mode"] == etl.INCREMENTAL and report["files"]["events"]["read"] == 1
    assert_same_tables(spark, reference, output)
    assert rejects(spark, output) == rejects(spark, reference)  # the crashed run's rejects are gone
    committed = sorted(path.stem for path in (output / etl.STATE_DIR / etl.RUNS_DIR).glob("*.json"))
    assert len(committed) == 2 and committed[-1] == report["run_id"]


def parquet_files(root: Path) -> set[Path]:
    """Parquet files under root, read while a job writes: a folder it removes meanwhile is skipped."""
    return {Path(parent) / name for parent, _, names in os.walk(root) for name in names if name.endswith(".parquet")}


def test_a_killed_run_leaves_a_lock_that_is_taken_over_when_stale(days, after_day_one, reference, tmp_path, spark):
    """kill -9 in the middle of the load: no finally runs, the lock stays behind."""
    output = tmp_path / "out"
    shutil.copytree(after_day_one, output)
    config = write_config(tmp_path / "dl.cfg", str(days["feed"]), str(output))
    published = parquet_files(output / "songplays")
    job = subprocess.Popen(
        [sys.executable, str(ETL), "--config", str(config), "--incremental"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while job.poll() is None and parquet_files(output / "songplays") == published:
        assert time.monotonic() < deadline, "the run never wrote songplays"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert (output / etl.LOCK_NAME).exists()

    blocked = run_job("--config", str(config), "--incremental")
    assert blocked.code == 2, blocked.output
    assert "is writing to" in blocked.stderr and etl.LOCK_NAME in blocked.stderr
    taken = run_job("--config", str(config), "--incremental", "--stale-lock-minutes", "0.0001")
    assert taken.code == 0, taken.output
    assert "taking over the stale lock" in taken.stdout
    assert_same_tables(spark, reference, output)


def lock_file(output: Path, minutes_ago: float) -> None:
    started = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    holder = {"run_id": "20181105T000000Z-other", "host": "elsewhere", "pid": 4242, "started_at": started.isoformat()}
    output.mkdir(parents=True, exist_ok=True)
    (output / etl.LOCK_NAME).write_text(json.dumps(holder))


def test_a_second_run_stops_at_once_with_one_line(days, tmp_path):
    output = tmp_path / "out"
    lock_file(output, minutes_ago=5)
    result = run_job("--input", str(days["feed"]), "--output", str(output), "--incremental")
    assert result.code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "20181105T000000Z-other on elsewhere, pid 4242" in lines[0], lines
    assert sorted(path.name for path in output.iterdir()) == [etl.LOCK_NAME]


def test_two_runs_at_once(days, tmp_path):
    """A real second process while the first holds the lock: it stops, the first finishes."""
    output = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, str(ETL), "--input", str(days["feed"]), "--output", str(output)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
    )
    deadline = time.monotonic() + 300
    while not (output / etl.LOCK_NAME).exists():
        assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.05)
    second = run_job("--input", str(days["feed"]), "--output", str(output), "--incremental")
    assert second.code == 2 and "is writing to" in second.stderr, second.output
    assert first.wait(timeout=600) == 0, first.communicate()
    assert not (output / etl.LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over_and_logged(spark, days, tmp_path, caplog):
    output = tmp_path / "out"
    lock_file(output, minutes_ago=etl.DEFAULT_STALE_LOCK_MINUTES + 1)
    with caplog.at_level(logging.WARNING, logger=etl.log.name):
        report = etl.run(spark, settings(days["feed"], output))
    assert report["status"] == "succeeded"
    assert any("taking over the stale lock of run 20181105T000000Z-other" in r.getMessage() for r in caplog.records)
    assert not (output / etl.LOCK_NAME).exists()


def test_a_killed_runs_uncommitted_files_are_never_published(spark, days, after_day_one, reference, tmp_path):
    """A run killed after some write tasks committed leaves their files under _temporary/.

    Hadoop's commit protocol merges every committed task folder under _temporary/0 when a
    job commits, so the next append into that table would publish the dead run's rows
    beside its own (the same plays twice): the next run removes them first.
    """
    output = tmp_path / "out"
    shutil.copytree(after_day_one, output)
    for table in ("songplays", "time", "songs"):
        published = sorted((output / table).rglob("*.parquet"))
        leftover = published[0].relative_to(output / table).with_name("part-00000-dead-run.c000.snappy.parquet")
        task = output / table / "_temporary" / "0" / "task_202612010000_0001_m_000000" / leftover
        task.parent.mkdir(parents=True)
        shutil.copy(published[0], task)
    etl.run(spark, settings(days["feed"], output))
    assert_same_tables(spark, reference, output)
    assert not list(output.rglob("_temporary"))
