"""The class archive local runs start from: saved once by the set-up, mapped by every JVM the job starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from jobrun import REPO, run_job, write_config

import etl

TOOL = REPO / "tools" / "class_archive.py"
FROM_THE_ARCHIVE = "source: shared objects file (top)"  # a class the saved (dynamic) archive gave
ENOUGH_ARCHIVED_CLASSES = 5000  # a sample run loads about 12,000 classes


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(etl.CACHE_DIR_VARIABLE, str(cache))
    return cache


def test_a_jvm_maps_the_archive_only_when_it_is_there_and_nothing_hooks_class_loading(empty_cache):
    assert etl.class_archive_options("") == []
    archive = etl.class_archive()
    assert archive is not None and archive.startswith(str(empty_cache))
    os.makedirs(os.path.dirname(archive))
    Path(archive).write_bytes(b"saved")
    assert etl.class_archive_options("-Xmx2g") == [*etl.CLASS_ARCHIVE_OPTIONS, etl.USE_CLASS_ARCHIVE + archive]
    for hook in ("-XX:StartFlightRecording=filename=run.jfr", "-javaagent:/opt/agent.jar", "-agentlib:jdwp=x"):
        assert etl.class_archive_options(f"-Xmx2g {hook}") == []


def save(cache: Path) -> str:
    env = {**os.environ, etl.CACHE_DIR_VARIABLE: str(cache), "SPARK_LOCAL_IP": "127.0.0.1"}
    done = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_sample(folder: Path, cache: Path, java_options: str):
    """The job on the bundled sample with these driver options, starting from the archive in cache."""
    folder.mkdir()
    config = write_config(
        folder / "dl.cfg", str(REPO / "sample_data"), str(folder / "out"), spark={etl.DRIVER_JAVA_OPTIONS: java_options}
    )
    return run_job("--config", str(config), env={etl.CACHE_DIR_VARIABLE: str(cache)})


def test_the_set_up_saves_the_archive_once_and_the_job_then_starts_from_it(empty_cache, tmp_path):
    if etl.class_archive() is None or "no base archive" in (first := save(empty_cache)):
        pytest.skip("this Java runtime has no base archive (a jlinked one): the job runs without a class archive")
    assert "class archive saved" in first, first
    assert os.path.getsize(etl.class_archive()) > 0
    assert not list(empty_cache.glob("*.partial"))
    assert "class archive in place" in save(empty_cache)  # a second set-up starts no JVM

    loaded = tmp_path / "classes.log"
    result = run_sample(tmp_path / "mapped", empty_cache, f"-Xlog:class+load=info:file={loaded}")
    assert result.code == 0, result.output
    assert loaded.read_text().count(FROM_THE_ARCHIVE) > ENOUGH_ARCHIVED_CLASSES

    # With the archive mapped, Java 17 crashes at start under Flight Recorder: the job then maps none.
    recording = tmp_path / "run.jfr"
    result = run_sample(tmp_path / "recorded", empty_cache, f"-XX:StartFlightRecording=filename={recording}")
    assert result.code == 0, result.output
    assert recording.exists()
