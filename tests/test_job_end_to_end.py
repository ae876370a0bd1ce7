"""The job as users run it, on real data: figures, partition folders, reruns, time zones."""

from __future__ import annotations

import shutil

import pytest
from conftest import shared_dataset
from jobrun import TABLES, count_lines, run_job, table_rows

pytestmark = pytest.mark.timeout(1200)

SAMPLE_FIGURES = {"songplays": 6820, "users": 97, "songs": 71, "artists": 69, "time": 6813}


@pytest.fixture(scope="module")
def sample_run(shared_sample_run):
    """The shared sample once (python etl.py, shared with other files): read only."""
    return shared_sample_run


def test_sample_gives_the_specified_figures(sample_run):
    _, _, result = sample_run
    assert result.report["tables"] == SAMPLE_FIGURES
    assert result.report["songplays_matched"] == 1


def test_the_one_matched_play_is_elenas_setanta_matins(sample_run, spark):
    _, output, _ = sample_run
    matched = spark.read.parquet(str(output / "songplays")).filter("song_id is not null").collect()
    assert [(row.song_id, row.user_id, row.session_id) for row in matched] == [("SOZCTXZ12AB0182364", 15, 818)]


def test_every_record_is_accounted_for(sample_run):
    data, _, result = sample_run
    books = result.report["accounting"]
    assert books["events"]["read"] == count_lines(data / "log_data") == 8056
    assert books["songs"]["read"] == count_lines(data / "song_data") == 71
    for dataset in ("songs", "events"):
        assert (
            books[dataset]["read"] == books[dataset]["used"] + books[dataset]["rejected"] + books[dataset]["excluded"]
        )
    assert result.report["excluded"]["events"]["by_reason"]["not_a_song_play"] == 8056 - 6820


def test_partition_folders_on_disk(sample_run):
    _, output, _ = sample_run
    assert [p.name for p in (output / "songplays").iterdir() if p.is_dir()] == ["year=2018"]
    assert [p.name for p in (output / "songplays" / "year=2018").iterdir()] == ["month=11"]
    assert [p.name for p in (output / "time" / "year=2018").iterdir()] == ["month=11"]
    song_files = list((output / "songs").glob("year=*/artist_id=*/*.parquet"))
    artist_folders = {(path.parent.parent.name, path.parent.name) for path in song_files}
    assert len(song_files) == len(artist_folders)  # one file per partition folder
    assert len(artist_folders) >= 69
    for table in ("users", "artists"):
        assert len(list((output / table).glob("*.parquet"))) == 1


def test_terminal_shows_stages_and_summary_without_spark_noise(sample_run):
    _, _, result = sample_run
    for stage in ("extract", "transform", "load"):
        assert stage in result.stdout
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("report: ")  # the summary table closes the run
    assert "songplays        6,820  replaced" in lines
    assert "events: 8,056 read = 6,820 used + 0 rejected + 1,236 excluded" in lines
    assert " INFO " not in result.stderr


def test_rerun_in_another_time_zone_overwrites_with_identical_tables(sample_run, spark, tmp_path):
    data, published, _ = sample_run
    output = tmp_path / "out"
    shutil.copytree(published, output)  # the shared run's output stays as it was for the other tests
    before = {table: table_rows(spark, output, table) for table in TABLES}
    again = run_job(
        "--input",
        str(data),
        "--output",
        str(output),
        env={"TZ": "America/Los_Angeles"},
        report=tmp_path / "r2.json",
    )
    assert again.code == 0, again.output
    after = {table: table_rows(spark, output, table) for table in TABLES}
    assert after == before  # same rows, not doubled, same hours and months in UTC
    assert again.report["table_actions"] == dict.fromkeys(TABLES, "replaced")


@pytest.mark.slow
def test_udacity_full_gives_the_specified_figures(tmp_path):
    data = shared_dataset("udacity-full")
    result = run_job("--input", str(data), "--output", str(tmp_path / "out"), report=tmp_path / "report.json")
    assert result.code == 0, result.output
    report = result.report
    assert report["tables"]["songplays"] == 6820
    assert report["songplays_matched"] == 333
    assert report["tables"]["songs"] == 14896
    assert report["tables"]["artists"] == 9553
    assert report["input"] == {"songs": 14896, "events": 8056}
