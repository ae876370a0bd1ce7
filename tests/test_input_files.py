"""Input files as users deliver them: a day's log compressed the way Kinesis Firehose writes
it (2018-11-04-events.json.gz), other Hadoop codecs, compressed song files, all next to plain
files. Every record in them is read, counted and gives the tables the plain files give; files
the job does not read are named in the report and the summary, never silently dropped.

One run through the command line (what a user sees); the others in this process.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pyarrow
import pytest
from conftest import REPO
from jobrun import (
    TABLES,
    assert_accounted,
    compress,
    count_lines,
    parquet_rows,
    record_lines,
    run_job,
    run_settings,
    table_rows,
)

import etl

sys.path.insert(0, str(REPO / "tools"))
import generate_data

pytestmark = pytest.mark.timeout(900)

SONGS, EVENTS, DAYS, SEED = 40, 1500, 6, 20181104
# Day logs delivered compressed, by day; 2018-11-01 stays plain.
COMPRESSED_DAYS = {
    "2018-11-02": ".lz4",
    "2018-11-03": ".snappy",
    "2018-11-04": ".gz",  # as Kinesis Firehose writes to S3
    "2018-11-05": ".bz2",
    "2018-11-06": ".deflate",
}
COMPRESSED_SONG_FILES = (".gz", ".bz2")  # the first song files, one record each
MERGED_SONG_FILES = 3  # the next ones become one multi-record file, gzip-compressed
DAILY_DAYS = ("2018-11-01", "2018-11-02", "2018-11-03")  # published before the .gz day lands
GZ_DAY = "2018-11-04"
DAY_AFTER_GZ_MS = 1541376000000  # 2018-11-05T00:00:00Z
NOT_INPUT = 5  # the files below that a run must skip, and say so


def add_files_that_are_not_input(root: Path, plain: Path) -> list[Path]:
    """What lands beside real input: notes, a codec Hadoop cannot read here, OS and job leftovers.

    Several hold real events, so reading any of them would change the counts and tables.
    """
    day = next((plain / "log_data").rglob("2018-11-01-events.json")).read_bytes()
    files = {
        root / "log_data" / "notes.txt": day,
        root / "log_data" / "x.json.zst": pyarrow.compress(day, codec="zstd", asbytes=True),
        root / "song_data" / ".DS_Store": b"\0\0\0\1Bud1",
        root / "log_data" / "_SUCCESS": b"",
        root / "log_data" / "_tmp" / "2018-11-07-events.json": day,
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return sorted(files)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """The same generated data twice: plain, and mixed (compressed files, files that are not input)."""
    base = tmp_path_factory.mktemp("inputs")
    plain, mixed = base / "plain", base / "mixed"
    generate_data.generate(plain, songs=SONGS, events=EVENTS, seed=SEED, layout="s3", start="2018-11-01", days=DAYS)
    shutil.copytree(plain, mixed)
    for day, suffix in COMPRESSED_DAYS.items():
        compress(next((mixed / "log_data").rglob(f"{day}-events.json")), suffix)
    song_files = sorted((mixed / "song_data").rglob("*.json"))
    for path, suffix in zip(song_files, COMPRESSED_SONG_FILES):
        compress(path, suffix)
    merged = song_files[len(COMPRESSED_SONG_FILES) : len(COMPRESSED_SONG_FILES) + MERGED_SONG_FILES]
    together = merged[0].with_name("TRMERGED.json")
    together.write_text("".join(path.read_text().rstrip("\n") + "\n" for path in merged))
    for path in merged:
        path.unlink()
    compress(together, ".gz")
    not_input = add_files_that_are_not_input(mixed, plain)
    return {"plain": plain, "mixed": mixed, "not_input": not_input}


def settings(input_dir: Path, output_dir: Path, incremental: bool = False) -> etl.Settings:
    return run_settings(input_dir, output_dir, incremental=incremental, config=REPO / "dl.cfg")


def lines_of(root: Path) -> dict[str, int]:
    return {dataset: count_lines(root / folder) for dataset, folder in etl.DATASET_FOLDERS.items()}


@pytest.fixture(scope="module")
def cli_run(inputs, tmp_path_factory) -> tuple[Path, object]:
    """python etl.py over the mixed input, as a user runs it."""
    output = tmp_path_factory.mktemp("cli") / "out"
    result = run_job("--input", str(inputs["mixed"]), "--output", str(output), report=output.parent / "report.json")
    assert result.code == 0, result.output
    return output, result


@pytest.fixture(scope="module")
def plain_run(spark, inputs, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("plain") / "out"
    etl.run(spark, settings(inputs["plain"], output))
    return output


def test_the_mixed_input_is_what_it_claims(inputs):
    """Else the tests below would prove less: each codec present, and the same records as the plain copy."""
    names = [path.name for path in (inputs["mixed"] / "log_data").rglob("*") if path.is_file()]
    assert "2018-11-04-events.json.gz" in names
    assert {suffix for suffix in COMPRESSED_DAYS.values()} <= {Path(name).suffix for name in names}
    assert len(list((inputs["mixed"] / "song_data").rglob("*.json.*"))) == len(COMPRESSED_SONG_FILES) + 1
    assert lines_of(inputs["mixed"]) == lines_of(inputs["plain"])
    assert min(lines_of(inputs["plain"]).values()) > 0


def test_every_compressed_record_is_read_and_accounted_for(cli_run, inputs):
    output, result = cli_run
    report = result.report
    song_files = [path for path in (inputs["mixed"] / "song_data").rglob("*") if path.is_file()]
    assert report["files"] == {
        "songs": {"listed": len(song_files) - 1, "read": len(song_files) - 1},  # all but .DS_Store
        "events": {"listed": DAYS, "read": DAYS},
    }
    assert_accounted(report, output, lines_of(inputs["plain"]))
    assert report["rejected"]["events"]["total"] == report["rejected"]["songs"]["total"] == 0


def test_compressed_input_gives_the_tables_of_the_plain_input(spark, cli_run, plain_run):
    output, _ = cli_run
    for table in TABLES:
        assert table_rows(spark, output, table) == table_rows(spark, plain_run, table), table


def test_files_that_are_not_input_are_listed_in_the_report(cli_run, inputs):
    _, result = cli_run
    skipped = result.report["skipped_files"]
    assert skipped["count"] == NOT_INPUT == len(inputs["not_input"])
    assert sorted(Path(uri.removeprefix("file:")) for uri in skipped["first"]) == inputs["not_input"]


def test_the_terminal_summary_counts_the_skipped_files_and_names_one(cli_run):
    _, result = cli_run
    first = result.report["skipped_files"]["first"][0]
    assert f"skipped {NOT_INPUT} files that are not input (e.g. {first})" in result.stdout.splitlines()
    assert f"{NOT_INPUT} other files skipped" in result.stdout
    assert result.stderr == ""


def test_a_daily_run_reads_a_gzip_day_file(spark, inputs, plain_run, tmp_path):
    """Days 1-3 published, then the Firehose-style .json.gz of day 4 lands: its plays are added."""
    feed, output = tmp_path / "feed", tmp_path / "out"
    shutil.copytree(inputs["plain"] / "song_data", feed / "song_data")
    for day in DAILY_DAYS:
        source = next((inputs["plain"] / "log_data").rglob(f"{day}-events.json"))
        target = feed / source.relative_to(inputs["plain"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    etl.run(spark, settings(feed, output, incremental=True))
    before = {dataset: parquet_rows(output / table) for dataset, table in (("songs", "songs"), ("events", "songplays"))}

    day_file = next((inputs["mixed"] / "log_data").rglob(f"{GZ_DAY}-events.json.gz"))
    landed = feed / day_file.relative_to(inputs["mixed"])
    shutil.copy(day_file, landed)
    report = etl.run(spark, settings(feed, output, incremental=True))

    assert report["mode"] == etl.INCREMENTAL
    assert report["files"]["events"]["read"] == 1 and report["files"]["songs"]["read"] == 0
    assert_accounted(report, output, {"events": len(record_lines(landed))}, rows_before=before)
    assert report["tables"]["songplays"] > 0
    assert songplays_before(spark, output, DAY_AFTER_GZ_MS) == songplays_before(spark, plain_run, DAY_AFTER_GZ_MS)


def songplays_before(spark, output: Path, end_ms: int) -> list:
    """songplays rows (as table_rows gives them) of plays before end_ms: songplay_id starts with ts."""
    columns = sorted(spark.read.parquet(str(output / "songplays")).columns)
    at = columns.index("songplay_id")
    return [row for row in table_rows(spark, output, "songplays") if int(row[at][:13]) < end_ms]
