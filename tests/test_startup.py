"""A JVM the job starts saves the classes it loaded once; later runs map them (class data sharing)."""

from __future__ import annotations

import subprocess

import pyarrow.parquet
import pytest
from jobrun import run_job, write_config
from test_failures import make_input

import etl

pytestmark = pytest.mark.timeout(600)

MIN_ARCHIVE_BYTES = 10 << 20  # Spark's classes: about 140 MB; a few MB would be a JDK-only archive


def rows(output, table: str) -> list[str]:
    return sorted(map(str, pyarrow.parquet.read_table(output / table).to_pylist()))


def test_the_archive_name_follows_the_class_path_and_a_saved_one_is_mapped(tmp_path, monkeypatch):
    monkeypatch.setenv(etl.CACHE_DIR_VARIABLE, str(tmp_path))
    saving = etl.class_archive_options("/a.jar")
    assert saving[-1].startswith(etl.SAVE_CLASS_ARCHIVE) and saving[-1].endswith(etl.PARTIAL_SUFFIX)
    archive = saving[-1][len(etl.SAVE_CLASS_ARCHIVE) :].rsplit(".", 2)[0]
    assert archive.startswith(str(tmp_path)) and archive.endswith(etl.CLASS_ARCHIVE_SUFFIX)
    other = etl.class_archive_options("/b.jar")[-1]
    assert other.rsplit(".", 2)[0] != saving[-1].rsplit(".", 2)[0], "another class path needs another archive"
    open(archive, "wb").close()
    assert etl.class_archive_options("/a.jar")[-1] == etl.USE_CLASS_ARCHIVE + archive


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


def test_without_the_archive_the_strict_jvm_would_refuse(tmp_path):
    """The check above can fail: -Xshare:on with an archive that is not there stops the JVM."""
    missing = tmp_path / "missing.jsa"
    java = etl.java_executable()
    done = subprocess.run([java, "-Xshare:on", f"-XX:SharedArchiveFile={missing}", "-version"], capture_output=True)
    assert done.returncode != 0
