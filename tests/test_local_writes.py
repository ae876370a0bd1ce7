"""Local writes without a forked `chmod` per file, with the same file modes as before."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from jobrun import run_job, write_config
from test_failures import make_input

import etl

pytestmark = pytest.mark.timeout(600)

FAKE_CHMOD = """#!/bin/sh
echo "$@" >> "{calls}"
exec /bin/chmod "$@"
"""


def run_counting_chmods(tmp_path: Path, name: str, spark: dict | None = None) -> tuple[Path, int]:
    """Run the job with a `chmod` first on PATH that records each call; (output, calls)."""
    bin_dir = tmp_path / f"bin-{name}"
    bin_dir.mkdir()
    calls = tmp_path / f"chmod-{name}.log"
    calls.touch()
    (bin_dir / "chmod").write_text(FAKE_CHMOD.format(calls=calls))
    (bin_dir / "chmod").chmod(0o755)
    output = tmp_path / f"out-{name}"
    config = write_config(tmp_path / f"{name}.cfg", str(tmp_path / "in"), str(output), spark=spark)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = run_job("--config", str(config), env=env)
    assert result.code == 0, result.output
    return output, len(calls.read_text().splitlines())


def modes(root: Path) -> dict[str, str]:
    """Permission bits of every table file and folder, by path relative to root."""
    return {
        str(path.relative_to(root)): oct(stat.S_IMODE(path.stat().st_mode))
        for path in sorted(root.rglob("*"))
        if not path.name.startswith(".")
    }


def test_no_chmod_forks_and_the_same_modes_as_hadoops_local_file_system(tmp_path):
    make_input(tmp_path / "in")
    fork_free, fork_free_calls = run_counting_chmods(tmp_path, "fork-free")
    forking, forking_calls = run_counting_chmods(tmp_path, "forking", {etl.FILE_SYSTEM_IMPL: etl.RAW_LOCAL_FILE_SYSTEM})
    assert forking_calls > 20, "the counting chmod was not used: the comparison proves nothing"
    assert fork_free_calls == 0
    table_modes = {path: mode for path, mode in modes(fork_free).items() if not path.startswith("_")}
    forking_modes = {path: mode for path, mode in modes(forking).items() if not path.startswith("_")}
    assert {path.split("part-")[0] for path in table_modes} == {path.split("part-")[0] for path in forking_modes}
    assert sorted(table_modes.values()) == sorted(forking_modes.values())
    assert set(table_modes.values()) <= {"0o644", "0o755"}


def test_falls_back_with_one_log_line_when_it_cannot_be_built(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=etl.log.name):
        assert etl.no_fork_file_system(spark_home=str(tmp_path)) is None
    assert len(caplog.records) == 1
    assert "fork-free file system could not be built" in caplog.records[0].getMessage()
    properties = etl.with_local_file_system({})
    assert properties[etl.FILE_SYSTEM_IMPL] in (etl.NO_FORK_FILE_SYSTEM, etl.RAW_LOCAL_FILE_SYSTEM)
    assert etl.with_local_file_system({etl.FILE_SYSTEM_IMPL: "x"}) == {etl.FILE_SYSTEM_IMPL: "x"}


def test_the_staged_upload_falls_back_to_copy_from_local_file_without_s3as_write_helper(spark, tmp_path):
    """upload_tree's one PUT a file needs S3A's private write helper; a file system without it
    (here the local one, as a hadoop-aws whose helper changed would be) still gets every file,
    through Hadoop's public copyFromLocalFile, _SUCCESS included."""
    staged = tmp_path / "staged"
    (staged / "year=2018").mkdir(parents=True)
    (staged / "year=2018" / "part-0.parquet").write_bytes(b"rows")
    (staged / "year=2018" / ".part-0.parquet.crc").write_bytes(b"crc")
    (staged / etl.SUCCESS_MARKER).write_bytes(b"")
    jvm = etl.driver_jvm(spark).jvm
    target = tmp_path / "target"
    destination, fs = etl.hadoop_path(spark, (target / "x").as_uri())
    assert etl.s3a_put(jvm, fs, destination, str(staged / etl.SUCCESS_MARKER)) is False
    assert etl.upload_tree(spark, str(staged), target.as_uri()) == 1
    uploaded = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
    assert [name for name in uploaded if not name.endswith(".crc")] == ["_SUCCESS", "year=2018/part-0.parquet"]
    assert (target / "year=2018" / "part-0.parquet").read_bytes() == b"rows"
