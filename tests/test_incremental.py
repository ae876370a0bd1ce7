"""Daily runs (--incremental): run after each day's file lands, they give exactly the tables
of one full run over all the files, write only what changes, and survive a crash anywhere.

Runs are made in this process (etl.run on the session fixture): a month is 30 runs.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO
from jobrun import TABLES, run_settings, table_rows, tree_digest

import etl

sys.path.insert(0, str(REPO / "tools"))
import generate_data

pytestmark = pytest.mark.timeout(1200)

MALFORMED_LINE = '{"ts": 1543622400000, "userId": "7", "page": "NextSo'
REDELIVERED_PER_DAY = 4


def make_month(root: Path, *, start: str = "2018-11-16", days: int = 30, songs: int = 60, seed: int = 11) -> Path:
    """A generated month crossing into December, with every kind of mess a day file can hold.

    The generator already writes in-file duplicates and logged-out visits; each day also
    holds a song play of a logged-out visitor, and each day after the first redelivers a
    few of the previous day's plays and holds a malformed line.
    """
    generate_data.generate(root, songs=songs, events=2400, seed=seed, layout="s3", start=start, days=days)
    previous: list[str] = []
    for path in sorted((root / "log_data").rglob("*.json")):
        lines = path.read_text().splitlines()
        plays = [line for line in lines if '"page":"NextSong"' in line.replace(" ", "")]
        logged_out = json.dumps({**json.loads(plays[0]), "userId": "", "itemInSession": 9999})
        extra = previous[:REDELIVERED_PER_DAY] + ([MALFORMED_LINE] if previous else [])
        path.write_text("\n".join(lines + [logged_out] + extra) + "\n")
        previous = plays
    return root


def settings(input_dir: Path, output_dir: Path, incremental: bool = True, checks: bool = True) -> etl.Settings:
    return run_settings(input_dir, output_dir, incremental=incremental, max_reject_rate=0.5, checks=checks)


def day_files(source: Path) -> list[Path]:
    return sorted((source / "log_data").rglob("*.json"), key=lambda path: path.name)


def land(source: Path, feed: Path, path: Path) -> None:
    """A file arrives in the feed at the same relative place it has in the source."""
    target = feed / path.relative_to(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)


def assert_same_tables(spark, expected: Path, actual: Path) -> None:
    for table in TABLES:
        assert table_rows(spark, actual, table) == table_rows(spark, expected, table), table


def assert_balanced(report: dict) -> None:
    for dataset in etl.DATASETS:
        books = report["accounting"][dataset]
        assert books["read"] == books["used"] + books["rejected"] + books["excluded"], (dataset, books)


def table_files(output: Path, table: str) -> dict[str, str]:
    return {path: digest for path, digest in tree_digest(output / table).items() if "part-" in path}


def rejects(spark, output: Path) -> Counter:
    """Every rejected event line, named by its file relative to log_data/ (inputs may differ)."""
    frame = spark.read.json(str(output / etl.REJECTED_DIR / "events"))
    return Counter((row.raw_record, row.source_file.split("/log_data/")[1], row.reason) for row in frame.collect())


@pytest.fixture(scope="module")
def month(tmp_path_factory) -> Path:
    return make_month(tmp_path_factory.mktemp("month") / "source")


@pytest.fixture(scope="module")
def daily(spark, month, tmp_path_factory) -> dict:
    """One incremental run after each day file lands, recording what each run changed."""
    base = tmp_path_factory.mktemp("daily")
    feed, output = base / "feed", base / "out"
    shutil.copytree(month / "song_data", feed / "song_data")
    runs = []
    for path in day_files(month):
        land(month, feed, path)
        before = {table: table_files(output, table) for table in TABLES} if output.exists() else {}
        report = etl.run(spark, settings(feed, output))  # 30 daily runs, each checked as users' are
        after = {table: table_files(output, table) for table in TABLES}
        runs.append({"file": path, "report": report, "before": before, "after": after})
    return {"feed": feed, "output": output, "runs": runs}


@pytest.fixture(scope="module")
def full(spark, month, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("full") / "out"
    return output, etl.run(spark, settings(month, output, incremental=False))


def test_daily_runs_give_the_tables_of_one_full_run(spark, daily, full):
    assert_same_tables(spark, full[0], daily["output"])


def test_the_month_has_every_kind_of_mess(daily, full):
    """Else the equality above would prove less than it claims."""
    excluded = full[1]["excluded"]["events"]["by_reason"]
    assert excluded["duplicate_event"] > len(daily["runs"])  # in-file and next-day redeliveries
    assert excluded["logged_out"] > 0 and excluded["not_a_song_play"] > 0
    assert full[1]["rejected"]["events"]["by_reason"] == {etl.MALFORMED_JSON: len(daily["runs"]) - 1}
    assert {run["report"]["tables"]["songplays"] > 0 for run in daily["runs"]} == {True}
    months = {path.split("/")[1] for path in table_files(daily["output"], "songplays")}
    assert months == {"month=11", "month=12"}


def test_first_run_is_full_and_the_rest_read_one_new_file_each(daily):
    reports = [run["report"] for run in daily["runs"]]
    assert [report["requested_mode"] for report in reports] == [etl.INCREMENTAL] * len(reports)
    assert [report["mode"] for report in reports] == [etl.FULL] + [etl.INCREMENTAL] * (len(reports) - 1)
    assert reports[0]["files"]["songs"]["read"] == reports[0]["files"]["songs"]["listed"] > 0
    for report in reports[1:]:
        assert report["files"] == {
            "songs": {"listed": reports[0]["files"]["songs"]["listed"], "read": 0},
            "events": {"listed": report["files"]["events"]["listed"], "read": 1},
        }


def test_each_report_accounts_for_exactly_its_own_file(daily):
    for run in daily["runs"]:
        report = run["report"]
        assert report["accounting"]["events"]["read"] == len(
            [line for line in run["file"].read_text().splitlines() if line.strip()]
        )
        assert_balanced(report)


def test_redelivered_events_count_once_against_published_plays(daily):
    later = [run["report"] for run in daily["runs"][1:]]
    published = [report["excluded"]["events"]["by_reason"].get(etl.ALREADY_PUBLISHED, 0) for report in later]
    assert all(count >= 1 for count in published), published  # each day redelivers NextSong lines of the day before


def test_only_partitions_of_new_plays_are_written(daily):
    for run in daily["runs"][1:]:
        day = run["file"].name[: len("2018-11-16")]
        year, month = int(day[:4]), int(day[5:7])
        for table in ("songplays", "time"):
            before, after = run["before"][table], run["after"][table]
            assert {path: after[path] for path in before} == before, f"{table}: a published file changed on {day}"
            added = set(after) - set(before)
            assert {path.split("/part-")[0] for path in added} <= {f"year={year}/month={month}"}, (day, added)
        assert run["before"]["songs"] == run["after"]["songs"]  # no new song file: not touched at all
        assert run["before"]["artists"] == run["after"]["artists"]


def test_every_runs_rejects_are_kept(spark, daily, full):
    folders = sorted(path.name for path in (daily["output"] / etl.REJECTED_DIR / "events").iterdir())
    with_rejects = [run["report"] for run in daily["runs"] if run["report"]["rejected"]["events"]["total"]]
    assert len(with_rejects) == len(daily["runs"]) - 1  # every day file but the first holds a bad line
    assert folders == sorted(f"{etl.RUN_ID_COLUMN}={report['run_id']}" for report in with_rejects)
    assert rejects(spark, daily["output"]) == rejects(spark, full[0])


def test_state_says_what_each_run_processed(daily, month):
    state = daily["output"] / etl.STATE_DIR / etl.RUNS_DIR
    manifests = sorted(state.glob("*.json"))
    assert [path.stem for path in manifests] == [run["report"]["run_id"] for run in daily["runs"]]
    entries = [
        json.loads(line) for path in sorted(state.glob("*.files.jsonl")) for line in path.read_text().splitlines()
    ]
    paths = {Path(entry["path"].removeprefix("file:")).name for entry in entries}
    assert paths >= {path.name for path in day_files(month)}
    assert {"path", "size", "modified", "etag", "run_id"} <= set(entries[-1])
    assert entries[-1]["run_id"] == daily["runs"][-1]["report"]["run_id"]


def test_a_run_with_nothing_new_changes_no_file(spark, daily):
    output = daily["output"]
    before = {path: digest for path, digest in tree_digest(output).items() if path != etl.REPORT_NAME}
    report = etl.run(spark, settings(daily["feed"], output))
    after = {path: digest for path, digest in tree_digest(output).items() if path != etl.REPORT_NAME}
    assert after == before
    assert report["nothing_new"]["last_run"] == daily["runs"][-1]["report"]["run_id"]
    assert set(report["table_actions"].values()) == {etl.UNTOUCHED}
    assert report["seconds"]["total"] < 60  # a listing and a few small reads, not a run
    assert "nothing new since run" in etl.summary_table(report)


def test_a_full_refresh_resets_the_state(spark, daily, full, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(daily["output"], output)
    report = etl.run(spark, settings(daily["feed"], output, incremental=False))
    assert report["mode"] == etl.FULL
    assert sorted(path.stem for path in (output / etl.STATE_DIR / etl.RUNS_DIR).glob("*.json")) == [report["run_id"]]
    assert [path.name for path in (output / etl.REJECTED_DIR / "events").iterdir()] == [
        f"{etl.RUN_ID_COLUMN}={report['run_id']}"
    ]
    assert_same_tables(spark, full[0], output)


def test_changed_and_new_files_are_processed(spark, month, tmp_path):
    """A rewritten day file: its new events are added, its old ones are already published.

    New song files: the songs table gains them in new files only, artists follow the
    whole catalogue, and plays arriving after their song are matched.
    """
    feed, output, reference = tmp_path / "feed", tmp_path / "out", tmp_path / "reference"
    extra = make_month(tmp_path / "extra", start="2018-11-16", days=2, songs=30, seed=99)
    shutil.copytree(month / "song_data", feed / "song_data")
    first_day = day_files(month)[0]
    land(month, feed, first_day)
    etl.run(spark, settings(feed, output))

    changed = feed / first_day.relative_to(month)
    new_event = json.loads(changed.read_text().splitlines()[0]) | {"ts": 1542412800123, "itemInSession": 999}
    song = json.loads(next((extra / "song_data").rglob("*.json")).read_text().splitlines()[0])
    new_event |= {"page": "NextSong", "song": song["title"], "artist": song["artist_name"], "length": song["duration"]}
    changed.write_text(changed.read_text() + json.dumps(new_event) + "\n")
    songs_before = table_files(output, "songs")
    for path in (extra / "song_data").rglob("*.json"):
        land(extra, feed, path)
    report = etl.run(spark, settings(feed, output))

    assert report["files"]["events"]["read"] == 1 and report["files"]["songs"]["read"] == 30
    assert report["tables"]["songplays"] == 1 and report["songplays_matched"] == 1
    assert report["excluded"]["events"]["by_reason"][etl.ALREADY_PUBLISHED] > 0
    assert report["table_actions"] == {
        "songplays": etl.APPENDED,
        "users": etl.REPLACED,
        "songs": etl.APPENDED,
        "artists": etl.REPLACED,
        "time": etl.APPENDED,
    }
    songs_after = table_files(output, "songs")
    assert {path: songs_after[path] for path in songs_before} == songs_before
    etl.run(spark, settings(feed, reference, incremental=False))
    assert_same_tables(spark, reference, output)


def test_shared_sample_day_by_day_equals_a_full_run(spark, tmp_path, shared_sample_run):
    source, reference, _ = shared_sample_run  # the full run: python etl.py over the whole sample
    feed, output = tmp_path / "feed", tmp_path / "out"
    shutil.copytree(source / "song_data", feed / "song_data")
    for path in day_files(source):  # 30 daily runs on real data, each checked (no check may stop one)
        land(source, feed, path)
        assert_balanced(etl.run(spark, settings(feed, output)))
    assert_same_tables(spark, reference, output)
    assert table_rows(spark, output, "songplays") and len(table_rows(spark, output, "songplays")) == 6820


def test_partition_folders_are_named_as_spark_names_them(spark):
    """A daily run reads the published partitions by folder name: the names must be Spark's own."""
    escape = spark.sparkContext._jvm.org.apache.spark.sql.catalyst.catalog.ExternalCatalogUtils.escapePathName
    every_char = "".join(map(chr, range(1, 256)))
    assert etl.folder_value(every_char) == escape(every_char)
    assert etl.folder_value(2018) == "2018" and etl.folder_value(None) == etl.HIVE_DEFAULT_PARTITION


def test_merge_rules_keep_what_was_published_and_take_each_users_latest_event(spark):
    """The daily-run merge rules on hand-made rows: published keys win, latest events by max."""
    published = spark.createDataFrame([("SO1", "first")], "song_id string, title string")
    new = spark.createDataFrame([("SO1", "again"), ("SO2", "new")], "song_id string, title string")
    flagged = etl.flag_published(new, published, "song_id")
    assert sorted((row.song_id, row[etl.PUBLISHED]) for row in flagged.collect()) == [("SO1", True), ("SO2", False)]
    catalogue = etl.merge_catalogue(published, flagged)
    assert sorted(tuple(row) for row in catalogue.collect()) == [("SO1", "first"), ("SO2", "new")]
    assert {row[etl.PUBLISHED] for row in etl.flag_published(new, None, "song_id").collect()} == {False}

    latest = f"user_id int, {etl.LATEST} struct<ts: bigint, level: string>"
    before = spark.createDataFrame([(7, (100, "free")), (8, (50, "paid"))], latest)
    today = spark.createDataFrame([(7, (200, "paid")), (9, (10, "free"))], latest)
    merged = {row.user_id: tuple(row[etl.LATEST]) for row in etl.merge_latest_user_events(before, today).collect()}
    assert merged == {7: (200, "paid"), 8: (50, "paid"), 9: (10, "free")}
