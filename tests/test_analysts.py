"""The analysts' view: tools/analyze.py, the portable SQL of sql/questions/ and the Athena DDL.

One run of the job on the bundled sample_data/ feeds every test. Each SQL file runs in
Spark SQL over the job's parquet and, through the tool, in DuckDB: both must give the
same rows. The CSVs are then checked against answers computed independently with the
Spark DataFrame API (and the job's own run report), so a query that is wrong the same
way in both engines still fails.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from infra import S3_DUMMY_KEY, S3_REGION
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import etl

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parent.parent
ANALYZE = REPO / "tools" / "analyze.py"
QUESTIONS_DIR = REPO / "sql" / "questions"
DDL_FILE = REPO / "sql" / "athena_tables.sql"
DOCS_REPORT = REPO / "docs" / "analysis"
SQL_FILES = sorted(QUESTIONS_DIR.glob("*.sql"))
TOOL_TIMEOUT_S = 300
TOP_N = 20  # the LIMIT of the ranking queries
DDL_LOCATION = "s3://BUCKET/PREFIX"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 5_000  # an empty figure is a few hundred bytes
BUCKET, PREFIX = "analysts-lake", "sparkify/out"
# Each question's CSV columns, as docs/analysts.md documents them.
CSV_COLUMNS = {
    "summary": ["plays", "matched_plays", "matched_share", "users", "first_day", "last_day"],
    "plays_by_hour": ["hour", "free_plays", "paid_plays", "plays"],
    "top_songs": ["title", "artist", "plays"],
    "top_artists": ["artist", "plays", "users"],
    "plays_per_day": ["day", "plays", "users"],
    "most_active_users": ["user_id", "first_name", "last_name", "current_level", "plays"],
    "paid_share_by_day": ["day", "plays", "paid_plays", "paid_share"],
    "top_locations": ["location", "plays", "users"],
}
CHARTED = sorted(set(CSV_COLUMNS) - {"summary"})


def analyze(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """python tools/analyze.py ARGS, as an analyst runs it."""
    return subprocess.run(
        [sys.executable, str(ANALYZE), *args],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        cwd=REPO,
        env=env,
    )


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def same_cell(text: str, value) -> bool:
    """A CSV cell against a value computed by Spark: nulls empty, numbers by value."""
    if value is None:
        return text == ""
    if isinstance(value, float):
        return text != "" and math.isclose(float(text), value, rel_tol=1e-12)
    if isinstance(value, int):
        return text != "" and int(text) == value
    if hasattr(value, "isoformat"):
        return text == value.isoformat()
    return text == str(value)


def assert_rows_equal(csv_rows: list[list[str]], expected: list[tuple], what: str) -> None:
    assert len(csv_rows) == len(expected), f"{what}: {len(csv_rows)} rows in the CSV, {len(expected)} expected"
    for number, (got, want) in enumerate(zip(csv_rows, expected)):
        assert len(got) == len(want), f"{what} row {number}: {got} vs {want}"
        assert all(same_cell(text, value) for text, value in zip(got, want)), f"{what} row {number}: {got} vs {want}"


def one_line_error(done: subprocess.CompletedProcess, *phrases: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


# --- fixtures: one job run, one report ---------------------------------------------------------


@pytest.fixture(scope="module")
def tables(sample_data_run) -> Path:
    """The tables of python etl.py --input sample_data (the session's shared run): read only."""
    return sample_data_run[0]


@pytest.fixture(scope="module")
def job_report(tables) -> dict:
    return json.loads((tables / etl.REPORT_NAME).read_text())


@pytest.fixture(scope="module")
def report(tables, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    done = analyze("--tables", str(tables), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def frames(spark, tables) -> dict[str, DataFrame]:
    """The five tables as Spark reads them, also registered as temp views named like the tables."""
    loaded = {table: spark.read.parquet(str(tables / table)) for table in etl.TABLE_NAMES}
    for table, frame in loaded.items():
        frame.createOrReplaceTempView(table)
    yield loaded
    for table in etl.TABLE_NAMES:
        spark.catalog.dropTempView(table)


# --- the same SQL in Spark SQL and in DuckDB -----------------------------------------------------


def test_there_is_a_query_per_question():
    assert sorted(path.stem for path in SQL_FILES) == sorted(CSV_COLUMNS)


@pytest.mark.parametrize("sql_file", SQL_FILES, ids=lambda path: path.stem)
def test_spark_sql_and_duckdb_give_the_same_rows(sql_file, spark, frames, report):
    answer = spark.sql(sql_file.read_text(encoding="utf-8"))
    header, rows = read_csv(report / f"{sql_file.stem}.csv")
    assert header == answer.columns
    expected = [tuple(row) for row in answer.collect()]
    assert expected, f"{sql_file.stem}: no rows on the sample; the comparison would prove nothing"
    assert_rows_equal(rows, expected, sql_file.stem)


def test_the_page_shows_exactly_the_sql_files(report):
    page = (report / "index.html").read_text(encoding="utf-8")
    for sql_file in SQL_FILES:
        assert html.escape(sql_file.read_text(encoding="utf-8")) in page, sql_file.name


# --- the CSVs against independent computations -----------------------------------------------------


def ranked(frame: DataFrame, order: list, limit: int = TOP_N) -> list[tuple]:
    return [tuple(row) for row in frame.orderBy(*order).limit(limit).collect()]


def expected_answers(frames: dict[str, DataFrame]) -> dict[str, list[tuple]]:
    """Every question answered with the DataFrame API, without the SQL files or the time table."""
    plays, users, songs, artists = (frames[t] for t in (etl.SONGPLAYS, etl.USERS, etl.SONGS, etl.ARTISTS))
    paid = F.sum(F.when(F.col("level") == "paid", 1).otherwise(0))
    free = F.sum(F.when(F.col("level") == "free", 1).otherwise(0))
    matched = plays.where(F.col("song_id").isNotNull())
    names = artists.select("artist_id", F.col("name").alias("artist"))
    by_song = (
        matched.select("song_id")
        .join(songs.select("song_id", "title", "artist_id"), "song_id")
        .join(names, "artist_id", "left")
        .groupBy("title", "artist")
        .agg(F.count(F.lit(1)).alias("plays"))
    )
    by_artist = (
        matched.join(names, "artist_id")
        .groupBy("artist")
        .agg(F.count(F.lit(1)).alias("plays"), F.countDistinct("user_id"))
    )
    by_user = (
        plays.groupBy("user_id")
        .agg(F.count(F.lit(1)).alias("plays"))
        .join(users.select("user_id", "first_name", "last_name", "level"), "user_id", "left")
        .select("user_id", "first_name", "last_name", "level", "plays")
    )
    daily = plays.groupBy(F.to_date("start_time").alias("day"))
    hourly = plays.groupBy(F.hour("start_time").alias("hour"))
    by_location = plays.where(F.col("location").isNotNull()).groupBy("location")
    total, matched_count = plays.count(), matched.count()
    first_day, last_day = plays.select(F.to_date(F.min("start_time")), F.to_date(F.max("start_time"))).first()
    return {
        "summary": [
            (total, matched_count, matched_count / total, users_who_played(plays), first_day, last_day),
        ],
        "plays_by_hour": ranked(hourly.agg(free, paid, F.count(F.lit(1))), ["hour"], limit=24),
        "top_songs": ranked(by_song, [F.desc("plays"), "title", F.asc_nulls_last("artist")]),
        "top_artists": ranked(by_artist, [F.desc("plays"), F.asc_nulls_last("artist")]),
        "plays_per_day": ranked(daily.agg(F.count(F.lit(1)), F.countDistinct("user_id")), ["day"], limit=10_000),
        "most_active_users": ranked(by_user, [F.desc("plays"), "user_id"]),
        "paid_share_by_day": ranked(
            daily.agg(F.count(F.lit(1)).alias("n"), paid.alias("p")).select("day", "n", "p", F.col("p") / F.col("n")),
            ["day"],
            limit=10_000,
        ),
        "top_locations": ranked(
            by_location.agg(F.count(F.lit(1)).alias("plays"), F.countDistinct("user_id")),
            [F.desc("plays"), "location"],
        ),
    }


def users_who_played(plays: DataFrame) -> int:
    return plays.select("user_id").distinct().count()


@pytest.fixture(scope="module")
def expected(frames) -> dict[str, list[tuple]]:
    return expected_answers(frames)


@pytest.mark.parametrize("name", sorted(CSV_COLUMNS))
def test_csv_columns_and_rows_match_an_independent_computation(name, report, expected):
    header, rows = read_csv(report / f"{name}.csv")
    assert header == CSV_COLUMNS[name]
    assert_rows_equal(rows, expected[name], name)


@pytest.mark.parametrize("name", ["top_songs", "top_artists", "most_active_users", "top_locations"])
def test_rankings_are_most_played_first_and_cut_at_the_limit(name, report, expected):
    header, rows = read_csv(report / f"{name}.csv")
    plays = [int(row[header.index("plays")]) for row in rows]
    assert plays == sorted(plays, reverse=True)
    assert len(rows) == TOP_N  # the sample has more than TOP_N of each


def test_committed_sample_report_is_current(report):
    """docs/analysis/ (README's charts) is what the tool gives on sample_data today."""
    for name in CSV_COLUMNS:
        committed = DOCS_REPORT / f"{name}.csv"
        assert committed.read_bytes() == (report / f"{name}.csv").read_bytes(), (
            f"{committed} is stale: rerun the commands of README's 'The report for the bundled sample'"
        )
    assert sorted(path.stem for path in DOCS_REPORT.glob("*.png")) == CHARTED


def test_figures_agree_with_the_jobs_own_report(report, job_report):
    header, (summary,) = read_csv(report / "summary.csv")
    values = dict(zip(header, summary))
    assert int(values["plays"]) == job_report["tables"]["songplays"]
    assert int(values["matched_plays"]) == job_report["songplays_matched"]
    assert 0 < job_report["songplays_matched"] < job_report["tables"]["songplays"]  # the sample has both kinds
    for name in ("plays_by_hour", "plays_per_day", "paid_share_by_day"):
        header, rows = read_csv(report / f"{name}.csv")
        assert sum(int(row[header.index("plays")]) for row in rows) == job_report["tables"]["songplays"], name


# --- the page ------------------------------------------------------------------------------


class PageLinks(HTMLParser):
    """The images and links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.anchors: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        self.ids.add(values.get("id", ""))
        if tag == "img":
            self.images.append(values["src"])
        if tag == "a":
            href = values["href"]
            (self.anchors if href.startswith("#") else self.links).append(href)


def test_page_references_existing_pngs_and_csvs(report):
    parser = PageLinks()
    parser.feed((report / "index.html").read_text(encoding="utf-8"))
    assert sorted(parser.images) == sorted(f"{name}.png" for name in CHARTED)
    assert sorted(parser.links) == sorted(f"{name}.csv" for name in CSV_COLUMNS)
    for relative in parser.images + parser.links:
        assert "/" not in relative and ":" not in relative, relative  # self-contained: beside index.html
        assert (report / relative).is_file(), relative
    assert sorted(anchor[1:] for anchor in parser.anchors) == CHARTED
    assert set(CHARTED) <= parser.ids
    for image in parser.images:
        data = (report / image).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > MIN_PNG_BYTES, image


def test_page_states_location_counts_time_and_matched_share(report, tables, job_report):
    page = (report / "index.html").read_text(encoding="utf-8")
    assert html.escape(str(tables.resolve())) in page
    rows = re.findall(r"<tr><td>(\w+)</td><td class=\"num\">([\d,]+)</td></tr>", page)
    assert {table: int(n.replace(",", "")) for table, n in rows} == job_report["tables"]
    assert re.search(r"Report generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", page)
    plays, matched = job_report["tables"]["songplays"], job_report["songplays_matched"]
    assert f"{matched:,} of {plays:,} plays ({matched / plays:.1%}) are matched" in page


# --- errors ----------------------------------------------------------------------------------


def test_a_folder_without_tables_is_one_line_exit_2(tmp_path):
    one_line_error(analyze("--tables", str(tmp_path), "--out", str(tmp_path / "r")), "no tables under", str(tmp_path))
    assert not (tmp_path / "r" / "index.html").exists()


def test_a_missing_folder_is_one_line_exit_2(tmp_path):
    one_line_error(analyze("--tables", str(tmp_path / "nope"), "--out", str(tmp_path / "r")), "is not a folder")


def test_missing_tables_are_named(tmp_path, tables):
    partial = tmp_path / "partial"
    for table in (etl.SONGPLAYS, etl.SONGS, etl.TIME):
        shutil.copytree(tables / table, partial / table)
    line = one_line_error(analyze("--tables", str(partial), "--out", str(tmp_path / "r")), "lacks")
    assert "users" in line and "artists" in line and "songplays" not in line


def test_empty_tables_give_a_report_that_says_so(tmp_path, tables):
    """A run without plays: Spark writes only _SUCCESS for empty partitioned tables."""
    empty = tmp_path / "empty"
    for table in etl.TABLE_NAMES:
        if etl.PARTITION_COLUMNS[table] and table != etl.SONGS:
            (empty / table).mkdir(parents=True)
            (empty / table / etl.SUCCESS_MARKER).write_text("")
        else:
            shutil.copytree(tables / table, empty / table)
    done = analyze("--tables", str(empty), "--out", str(tmp_path / "r"))
    assert done.returncode == 0, done.stdout + done.stderr
    header, rows = read_csv(tmp_path / "r" / "summary.csv")
    assert rows == [["0", "0", "", "0", "", ""]]
    _, songs = read_csv(tmp_path / "r" / "top_songs.csv")
    assert songs == []
    assert "There are no plays in these tables." in (tmp_path / "r" / "index.html").read_text(encoding="utf-8")


def test_a_usage_mistake_is_one_line_exit_2():
    one_line_error(analyze("--tables", "x"), "--out")
    one_line_error(analyze("--ddl"), "--location")
    one_line_error(analyze("--ddl", "--location", "/tmp/x"), "s3://")


# --- Athena DDL ------------------------------------------------------------------------------


def parse_ddl(text: str) -> dict[str, dict]:
    """Per table: columns, partition columns (name -> type, in order), location, properties."""
    tables = {}
    pattern = re.compile(
        r"CREATE EXTERNAL TABLE IF NOT EXISTS `(\w+)` \((.*?)\)\n(?:PARTITIONED BY \((.*?)\)\n)?"
        r"STORED AS PARQUET\nLOCATION '([^']*)'(?:\nTBLPROPERTIES \((.*?)\))?;",
        re.S,
    )

    def columns(block: str | None) -> list[tuple[str, str]]:
        return re.findall(r"`(\w+)` (\w+)", block or "")

    for name, cols, parts, location, props in pattern.findall(text):
        tables[name] = {
            "columns": columns(cols),
            "partitions": columns(parts),
            "location": location,
            "properties": dict(re.findall(r"'([^']+)' = '([^']*)'", props or "")),
        }
    return tables


def test_ddl_columns_and_types_equal_table_schemas():
    ddl = parse_ddl(DDL_FILE.read_text(encoding="utf-8"))
    assert list(ddl) == list(etl.TABLE_NAMES)
    for table in etl.TABLE_NAMES:
        schema, partitions = etl.TABLE_SCHEMAS[table], etl.PARTITION_COLUMNS[table]
        declared = ddl[table]["columns"] + ddl[table]["partitions"]
        # Spark's own SQL names of its types are Hive's, which Athena's DDL uses
        assert dict(declared) == {field.name: field.dataType.simpleString() for field in schema}, table
        assert len(declared) == len(schema.fields), table
        assert [name for name, _ in ddl[table]["partitions"]] == list(partitions), table
        assert [name for name, _ in ddl[table]["columns"]] == [f.name for f in schema if f.name not in partitions]
        assert ddl[table]["location"] == f"{DDL_LOCATION}/{table}/"


def test_ddl_projects_the_time_partitions_and_registers_the_songs_ones():
    text = DDL_FILE.read_text(encoding="utf-8")
    ddl = parse_ddl(text)
    for table in (etl.SONGPLAYS, etl.TIME):
        properties = ddl[table]["properties"]
        assert properties["projection.enabled"] == "true"
        assert properties["projection.year.type"] == properties["projection.month.type"] == "integer"
        assert properties["projection.month.range"] == "1,12"
        first, last = map(int, properties["projection.year.range"].split(","))
        assert first <= 2018 <= last  # the sample's plays must be reachable
        template = properties["storage.location.template"]
        assert template == f"{DDL_LOCATION}/{table}/year=${{year}}/month=${{month}}/"
    assert ddl[etl.SONGS]["properties"] == {}
    assert "MSCK REPAIR TABLE `songs`;" in text


def test_committed_ddl_is_what_the_tool_generates():
    header = re.search(r"python tools/analyze\.py (--ddl .*)", DDL_FILE.read_text(encoding="utf-8"))
    assert header, "the DDL file names the command that made it"
    done = analyze(*header.group(1).split())
    assert done.returncode == 0, done.stderr
    assert done.stdout.encode("utf-8") == DDL_FILE.read_bytes()
    assert f"--location {DDL_LOCATION} " in header.group(0)


def test_ddl_follows_another_location_and_years():
    done = analyze("--ddl", "--location", "s3a://my-bucket/lake/", "--years", "2017,2019")
    assert done.returncode == 0, done.stderr
    ddl = parse_ddl(done.stdout)
    assert ddl[etl.USERS]["location"] == "s3://my-bucket/lake/users/"
    assert ddl[etl.SONGPLAYS]["properties"]["projection.year.range"] == "2017,2019"


# --- S3 ----------------------------------------------------------------------------------------


def s3_env(**overrides: str) -> dict:
    """Dummy keys for the local server; no profile files and no instance metadata lookups."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=S3_DUMMY_KEY,
        AWS_SECRET_ACCESS_KEY=S3_DUMMY_KEY,
        AWS_DEFAULT_REGION=S3_REGION,
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.update(overrides)
    return {key: value for key, value in env.items() if value}


def test_s3_tables_give_the_same_report(s3_server, tables, report, tmp_path):
    s3_server.upload_tree(tables, BUCKET, PREFIX)
    out = tmp_path / "from-s3"
    location = f"s3://{BUCKET}/{PREFIX}"
    done = analyze("--tables", location, "--out", str(out), "--endpoint-url", s3_server.endpoint, env=s3_env())
    assert done.returncode == 0, done.stdout + done.stderr
    for name in CSV_COLUMNS:
        assert (out / f"{name}.csv").read_bytes() == (report / f"{name}.csv").read_bytes(), name
    page = (out / "index.html").read_text(encoding="utf-8")
    assert location in page
    assert "Tables built by sparkify-etl at" in page  # the run report came along


def test_s3_endpoint_from_the_environment_and_a_missing_bucket(s3_server, tmp_path):
    env = s3_env(AWS_ENDPOINT_URL=s3_server.endpoint)
    one_line_error(analyze("--tables", "s3://no-such-bucket/x", "--out", str(tmp_path), env=env), "NoSuchBucket")


def test_s3_without_credentials_says_so(s3_server, tmp_path):
    env = s3_env(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    args = ("--tables", f"s3://{BUCKET}/{PREFIX}", "--out", str(tmp_path), "--endpoint-url", s3_server.endpoint)
    one_line_error(analyze(*args, env=env), "no AWS credentials")
