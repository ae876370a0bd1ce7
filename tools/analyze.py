"""The analysts' report: what Sparkify's users play, read from the job's tables with DuckDB.

    python tools/analyze.py --tables OUTPUT --out DIR [--endpoint-url URL]
    python tools/analyze.py --ddl --location s3://BUCKET/PREFIX [--years 2018,2030]

The first form reads the five parquet tables that etl.py wrote under OUTPUT (a local
folder, or s3://bucket/prefix, copied to a temporary folder first), runs every query of
sql/questions/ and writes DIR/index.html with one CSV and one PNG chart per question.
The queries are plain SQL that runs unchanged in Athena (Trino) and Spark SQL; this tool
runs exactly those files, so the report and the warehouse cannot disagree. The second
form prints the Athena / Glue Data Catalog tables, generated from etl.py's own
TABLE_SCHEMAS and PARTITION_COLUMNS so they cannot drift from what the job writes.

Exit codes: 0 done, 2 a mistake the user can fix (one line), 1 anything unexpected.
Never runs on the cluster; etl.py does not import it (it imports etl for the schemas only:
importing etl does not start Spark).
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import duckdb
import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib import dates as mdates
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # etl.py is a script at the repository's top, not a package

import etl  # noqa: E402

QUESTIONS_DIR = REPO / "sql" / "questions"
DDL_FILE = REPO / "sql" / "athena_tables.sql"
INDEX_NAME = "index.html"
SQL_SUFFIX, CSV_SUFFIX, PNG_SUFFIX = ".sql", ".csv", ".png"
PARQUET_SUFFIX = ".parquet"
S3_SCHEMES = ("s3", "s3a")
UTC = "UTC"
USER_ERROR_EXIT, FAILURE_EXIT = 2, 1

# Spark types of TABLE_SCHEMAS in the two other engines: Athena's DDL (Hive names) and
# DuckDB's views. A type missing here fails loudly instead of being guessed.
ATHENA_TYPES = {
    "StringType": "string",
    "IntegerType": "int",
    "LongType": "bigint",
    "ShortType": "smallint",
    "ByteType": "tinyint",
    "DoubleType": "double",
    "FloatType": "float",
    "BooleanType": "boolean",
    "DateType": "date",
    "TimestampType": "timestamp",
}
DUCKDB_TYPES = {
    "StringType": "VARCHAR",
    "IntegerType": "INTEGER",
    "LongType": "BIGINT",
    "ShortType": "SMALLINT",
    "ByteType": "TINYINT",
    "DoubleType": "DOUBLE",
    "FloatType": "FLOAT",
    "BooleanType": "BOOLEAN",
    "DateType": "DATE",
    # Athena's timestamp has no zone and the job's are UTC instants: the views give the
    # UTC wall clock, so CAST(start_time AS DATE) is the UTC day in every engine.
    "TimestampType": "TIMESTAMP",
}

# Athena partition projection: integer partition columns with a known range. The play
# years are a fixed default (Sparkify's logs start in 2018) so that the committed DDL is
# reproducible; --years widens it. A table with any other partition column (songs:
# artist_id, an unbounded string) is not projected, see MSCK_NOTE.
DEFAULT_YEARS = (2018, 2030)
MONTH_RANGE = (1, 12)
YEAR, MONTH = "year", "month"
MSCK_NOTE = (
    "-- {table}: partitioned by {columns}. artist_id is an unbounded string, and Athena's only\n"
    "-- projection for such values ('injected') rejects every query that does not pin\n"
    "-- artist_id = '...' in its WHERE clause, joins included (top_songs.sql would fail).\n"
    "-- So its partitions are registered instead: run this after each job run.\n"
)

# S3: a local copy of the tables' parquet objects (see README, "For analysts").
S3_TRANSFER_THREADS = 16
S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 60
S3_MAX_ATTEMPTS = 3

# Report layout.
MAX_HTML_ROWS = 31  # a month of days; longer answers are complete in their CSV
LABEL_CHARS = 42
FIGURE_WIDTH_IN = 9.0
BAR_HEIGHT_IN = 0.32
CHART_MIN_HEIGHT_IN = 2.6
TIME_CHART_HEIGHT_IN = 3.8
CHART_DPI = 100
RANKING_X_MARGIN = 0.08
HOURS = range(24)
FREE, PAID = "free", "paid"
COLORS = {FREE: "#9ecae1", PAID: "#2171b5", "other": "#bdbdbd", "bars": "#4c72b0", "line": "#dd8452"}


class UserError(Exception):
    """A mistake the user can fix: one line on stderr, exit code 2."""


# --- Schemas: etl.py's contract in the other engines -------------------------------------


def engine_type(spark_type, types: dict[str, str]) -> str:
    """The engine's name for a Spark type of TABLE_SCHEMAS; unknown types are an error."""
    name = type(spark_type).__name__
    if name not in types:
        raise ValueError(f"no mapping for Spark type {name}: add it to ATHENA_TYPES and DUCKDB_TYPES")
    return types[name]


def athena_ddl(location: str, years: tuple[int, int] = DEFAULT_YEARS) -> str:
    """CREATE EXTERNAL TABLE statements for the five tables under ``location`` (s3://...)."""
    root = s3_location(location)
    first, last = years
    statements = [
        "-- Athena / AWS Glue Data Catalog tables over the parquet that etl.py writes.\n"
        "-- Generated from etl.py's TABLE_SCHEMAS and PARTITION_COLUMNS; do not edit, regenerate:\n"
        f"--   python tools/analyze.py --ddl --location {root} --years {first},{last}\n"
        "-- Athena runs one statement per query: run them one by one, in a database of your choice.\n"
    ]
    ranges = {YEAR: (first, last), MONTH: MONTH_RANGE}
    for table in etl.TABLE_NAMES:
        schema = etl.TABLE_SCHEMAS[table]
        partitions = etl.PARTITION_COLUMNS[table]
        location_uri = f"{root}/{table}/"
        types = {f.name: engine_type(f.dataType, ATHENA_TYPES) for f in schema}
        columns = [f"  `{name}` {kind}" for name, kind in types.items() if name not in partitions]
        lines = [f"CREATE EXTERNAL TABLE IF NOT EXISTS `{table}` (", ",\n".join(columns), ")"]
        if partitions:
            lines += ["PARTITIONED BY (", ",\n".join(f"  `{name}` {types[name]}" for name in partitions), ")"]
        lines += ["STORED AS PARQUET", f"LOCATION '{location_uri}'"]
        projected = bool(partitions) and all(name in ranges and types[name] == "int" for name in partitions)
        if projected:
            template = "/".join(f"{name}=${{{name}}}" for name in partitions)
            properties = [("projection.enabled", "true")]
            for name in partitions:
                low, high = ranges[name]
                properties += [(f"projection.{name}.type", "integer"), (f"projection.{name}.range", f"{low},{high}")]
            properties.append(("storage.location.template", f"{location_uri}{template}/"))
            lines += ["TBLPROPERTIES (", ",\n".join(f"  '{key}' = '{value}'" for key, value in properties), ")"]
        statement = "\n".join(lines) + ";\n"
        if partitions and not projected:
            note = MSCK_NOTE.format(table=table, columns=", ".join(partitions))
            statement += f"\n{note}MSCK REPAIR TABLE `{table}`;\n"
        statements.append(statement)
    return "\n".join(statements)


def s3_location(location: str) -> str:
    """s3://bucket/prefix without a trailing slash (Athena knows no s3a://)."""
    parsed = urlparse(location)
    if parsed.scheme not in S3_SCHEMES or not parsed.netloc:
        raise UserError(f"--location must be s3://BUCKET/PREFIX, got {location!r}")
    return f"s3://{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")


def parse_years(text: str) -> tuple[int, int]:
    """FIRST,LAST as two integers, FIRST <= LAST."""
    try:
        first, last = (int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--years must be FIRST,LAST (e.g. 2018,2030), got {text!r}") from None
    if first > last:
        raise UserError(f"--years: {first} is after {last}")
    return first, last


# --- Reading the tables ---------------------------------------------------------------------


def parquet_files(folder: Path) -> list[Path]:
    """The data files of a table folder, as Spark and Athena see them (no _ or . names)."""
    return [
        path
        for path in folder.rglob(f"*{PARQUET_SUFFIX}")
        if not any(part.startswith(("_", ".")) for part in path.relative_to(folder).parts)
    ]


def is_empty_table(folder: Path) -> bool:
    """Spark writes no file at all for an empty partitioned table, only its _SUCCESS marker."""
    return (folder / etl.SUCCESS_MARKER).is_file() and not parquet_files(folder)


def check_tables(root: Path, shown: str) -> None:
    """Every table folder holds parquet or is a finished empty table, else one line naming the missing."""
    if not root.is_dir():
        raise UserError(f"{shown} is not a folder (pass --tables the output root of etl.py)")
    missing = [table for table in etl.TABLE_NAMES if not (parquet_files(root / table) or is_empty_table(root / table))]
    if len(missing) == len(etl.TABLE_NAMES):
        raise UserError(
            f"no tables under {shown}: expected the folders {', '.join(etl.TABLE_NAMES)} with parquet files"
            " (pass --tables the output root of etl.py)"
        )
    if missing:
        raise UserError(f"{shown} lacks the table(s) {', '.join(missing)} (a complete run of etl.py writes all five)")


def connect(root: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per table, typed and ordered as TABLE_SCHEMAS says."""
    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{UTC}'")
    con.execute("SET enable_progress_bar = false")
    for table in etl.TABLE_NAMES:
        schema = etl.TABLE_SCHEMAS[table]
        partitions = etl.PARTITION_COLUMNS[table]
        glob = str(root / table / "**" / f"*{PARQUET_SUFFIX}").replace("'", "''")
        hive_types = ", ".join(f"'{name}': {engine_type(schema[name].dataType, DUCKDB_TYPES)}" for name in partitions)
        options = "hive_partitioning = true" + (f", hive_types = {{{hive_types}}}" if partitions else "")
        if is_empty_table(root / table):
            columns = ", ".join(f'CAST(NULL AS {engine_type(f.dataType, DUCKDB_TYPES)}) AS "{f.name}"' for f in schema)
            con.execute(f'CREATE VIEW "{table}" AS SELECT {columns} WHERE false')
            continue
        columns = ", ".join(
            f'CAST("{f.name}" AS {engine_type(f.dataType, DUCKDB_TYPES)}) AS "{f.name}"' for f in schema
        )
        con.execute(f"CREATE VIEW \"{table}\" AS SELECT {columns} FROM read_parquet('{glob}', {options})")
    return con


def row_counts(con: duckdb.DuckDBPyConnection, shown: str) -> dict[str, int]:
    """Rows per table; reading them is also where a table that breaks the contract shows up."""
    counts = {}
    for table in etl.TABLE_NAMES:
        try:
            counts[table] = con.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        except duckdb.Error as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise UserError(f"cannot read table {table} under {shown} as etl.py's schema: {first_line}") from None
    return counts


def read_report(root: Path) -> dict:
    """The job's run report beside the tables, if there is a readable one."""
    try:
        return json.loads((root / etl.REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@contextmanager
def local_tables(location: str, endpoint_url: str | None) -> Iterator[Path]:
    """A local folder holding the tables: the folder itself, or a temporary copy of s3://..."""
    if urlparse(location).scheme in S3_SCHEMES:
        with tempfile.TemporaryDirectory(prefix="sparkify-analyze-") as staging:
            download_tables(location, endpoint_url, Path(staging))
            yield Path(staging)
    elif "://" in location:
        raise UserError(f"unsupported location {location}: use a local folder or s3://bucket/prefix")
    else:
        yield Path(location)


def download_tables(location: str, endpoint_url: str | None, dest: Path) -> None:
    """Copy each table's parquet objects and _SUCCESS marker (and the run report) from S3 into ``dest``.

    DuckDB cannot read S3 itself here: its httpfs extension has no PyPI build for the
    pinned DuckDB (README, "For analysts"). Credentials come from boto3's usual chain.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    parsed = urlparse(location)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    config = Config(
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
        max_pool_connections=S3_TRANSFER_THREADS,
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    client = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)
    base = f"{prefix}/" if prefix else ""
    try:
        wanted = []
        for table in etl.TABLE_NAMES:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{base}{table}/"):
                for item in page.get("Contents", []):
                    relative = item["Key"][len(base) :]
                    parts = relative.split("/")[1:]
                    data = relative.endswith(PARQUET_SUFFIX) and not any(p.startswith(("_", ".")) for p in parts)
                    if data or parts == [etl.SUCCESS_MARKER]:  # the marker tells an empty table from none
                        wanted.append(relative)

        def fetch(relative: str) -> None:
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, f"{base}{relative}", str(target))

        with ThreadPoolExecutor(max_workers=S3_TRANSFER_THREADS) as pool:
            list(pool.map(fetch, wanted))
        with suppress(ClientError):  # no report: the page says so
            client.download_file(bucket, f"{base}{etl.REPORT_NAME}", str(dest / etl.REPORT_NAME))
    except NoCredentialsError:
        raise UserError(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            " (and AWS_SESSION_TOKEN), or AWS_PROFILE"
        ) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise UserError(f"S3 refused to list or read s3://{bucket}/{base}: {code or exc}") from None
    except BotoCoreError as exc:
        raise UserError(f"cannot read s3://{bucket}/{base}: {exc}") from None


# --- The questions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One query's result: column names and rows, in the query's order."""

    columns: list[str]
    rows: list[tuple]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.rows]


@dataclass(frozen=True)
class Question:
    """A query of sql/questions/ and how the page shows it (its name names its three files)."""

    name: str
    title: str
    note: str
    chart: Callable[[Answer], Figure] | None = None


def run_query(con: duckdb.DuckDBPyConnection, sql_path: Path) -> Answer:
    """A question's SQL file, run exactly as written."""
    cursor = con.execute(sql_path.read_text(encoding="utf-8"))
    return Answer([column[0] for column in cursor.description], cursor.fetchall())


def csv_value(value) -> str:
    """A CSV cell: empty for null, ISO dates, full-precision numbers."""
    if value is None:
        return ""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def write_csv(answer: Answer, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(answer.columns)
        writer.writerows([csv_value(value) for value in row] for row in answer.rows)


# --- Charts ---------------------------------------------------------------------------------


def short(text, limit: int = LABEL_CHARS) -> str:
    text = "(unknown)" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ranking_chart(labels: Sequence[str], values: Sequence[int], xlabel: str, colors=None) -> Figure:
    """Horizontal bars, the largest on top: rankings read like a list."""
    height = max(CHART_MIN_HEIGHT_IN, BAR_HEIGHT_IN * len(labels) + 1.0)
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height), layout="constrained")
    axes = figure.subplots()
    positions = range(len(labels))
    axes.barh(positions, values, color=colors or COLORS["bars"])
    axes.set_yticks(list(positions), labels=[short(label) for label in labels])
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.margins(x=RANKING_X_MARGIN)  # room for the value beside the longest bar
    axes.grid(axis="x", alpha=0.3)
    for position, value in zip(positions, values):
        axes.annotate(f"{value:,}", (value, position), xytext=(3, 0), textcoords="offset points", va="center")
    return figure


def empty_chart(message: str) -> Figure:
    figure = Figure(figsize=(FIGURE_WIDTH_IN, CHART_MIN_HEIGHT_IN), layout="constrained")
    axes = figure.subplots()
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()
    return figure


def chart_by_hour(answer: Answer) -> Figure:
    """Stacked free / paid bars for all 24 hours (hours without plays show as zero)."""
    by_hour = {record["hour"]: record for record in answer.records()}
    free = [by_hour[h]["free_plays"] if h in by_hour else 0 for h in HOURS]
    paid = [by_hour[h]["paid_plays"] if h in by_hour else 0 for h in HOURS]
    other = [by_hour[h]["plays"] - f - p if h in by_hour else 0 for h, f, p in zip(HOURS, free, paid)]
    figure = Figure(figsize=(FIGURE_WIDTH_IN, TIME_CHART_HEIGHT_IN), layout="constrained")
    axes = figure.subplots()
    axes.bar(HOURS, free, color=COLORS[FREE], label=FREE)
    axes.bar(HOURS, paid, bottom=free, color=COLORS[PAID], label=PAID)
    if any(other):
        axes.bar(HOURS, other, bottom=[f + p for f, p in zip(free, paid)], color=COLORS["other"], label="other level")
    axes.set_xticks(list(HOURS))
    axes.set_xlabel("hour of day (UTC)")
    axes.set_ylabel("plays")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(title="level")
    return figure


def day_axis(axes) -> None:
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def chart_per_day(answer: Answer) -> Figure:
    """Plays as bars, distinct active users as a line on its own axis."""
    records = answer.records()
    if not records:
        return empty_chart("no plays")
    days = [record["day"] for record in records]
    figure = Figure(figsize=(FIGURE_WIDTH_IN, TIME_CHART_HEIGHT_IN), layout="constrained")
    axes = figure.subplots()
    axes.bar(days, [record["plays"] for record in records], color=COLORS["bars"], label="plays")
    axes.set_ylabel("plays")
    users = axes.twinx()
    users.plot(days, [record["users"] for record in records], color=COLORS["line"], marker=".", label="active users")
    users.set_ylabel("active users")
    users.set_ylim(bottom=0)
    users.yaxis.set_major_locator(MaxNLocator(integer=True))
    day_axis(axes)
    axes.grid(axis="y", alpha=0.3)
    handles = [*axes.get_legend_handles_labels()[0], *users.get_legend_handles_labels()[0]]
    axes.legend(handles=handles, loc="upper left")
    return figure


def chart_paid_share(answer: Answer) -> Figure:
    """Paid share per day, with the share over the whole period as a reference line."""
    records = answer.records()
    if not records:
        return empty_chart("no plays")
    figure = Figure(figsize=(FIGURE_WIDTH_IN, TIME_CHART_HEIGHT_IN), layout="constrained")
    axes = figure.subplots()
    days = [record["day"] for record in records]
    axes.plot(days, [record["paid_share"] for record in records], color=COLORS[PAID], marker=".", label="that day")
    overall = sum(r["paid_plays"] for r in records) / sum(r["plays"] for r in records)
    axes.axhline(overall, color=COLORS["other"], linestyle="--", label=f"whole period: {overall:.0%}")
    axes.set_ylim(0, 1)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylabel("plays on a paid level")
    day_axis(axes)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    return figure


def chart_ranking(label_column: str, xlabel: str = "plays") -> Callable[[Answer], Figure]:
    def chart(answer: Answer) -> Figure:
        records = answer.records()
        if not records:
            return empty_chart("no rows")
        return ranking_chart([r[label_column] for r in records], [r["plays"] for r in records], xlabel)

    return chart


def chart_top_songs(answer: Answer) -> Figure:
    records = answer.records()
    if not records:
        return empty_chart("no matched plays")
    labels = [f"{short(r['title'], 28)} · {short(r['artist'], 20)}" for r in records]
    return ranking_chart(labels, [r["plays"] for r in records], "plays (matched plays only)")


def chart_users(answer: Answer) -> Figure:
    """Most active users, coloured by their current level."""
    records = answer.records()
    if not records:
        return empty_chart("no plays")
    labels = [f"{r['first_name'] or ''} {r['last_name'] or ''} (#{r['user_id']})".strip() for r in records]
    colors = [COLORS.get(r["current_level"], COLORS["other"]) for r in records]
    figure = ranking_chart(labels, [r["plays"] for r in records], "plays", colors=colors)
    axes = figure.axes[0]
    for level in (FREE, PAID):
        axes.bar(0, 0, color=COLORS[level], label=f"now {level}")
    axes.legend(loc="lower right")
    return figure


QUESTIONS = (
    Question(
        "plays_by_hour",
        "When do users play music? Plays per hour of day, free and paid",
        "Hours are UTC. The level is the user's subscription at the time of each play.",
        chart_by_hour,
    ),
    Question(
        "top_songs",
        "Which songs are played most?",
        "Counted over the plays matched to a catalogue song only; the share of matched plays is"
        " stated at the top of this page. A song is a title by an artist's name.",
        chart_top_songs,
    ),
    Question(
        "top_artists",
        "Which artists are played most?",
        "Matched plays only; users is how many distinct users played the artist.",
        chart_ranking("artist", "plays (matched plays only)"),
    ),
    Question(
        "plays_per_day",
        "How many plays per day?",
        "All plays, matched or not, per UTC day, with the distinct users who played that day.",
        chart_per_day,
    ),
    Question(
        "most_active_users",
        "Who are the most active users?",
        "All plays per user; current_level is the user's subscription now (the users table).",
        chart_users,
    ),
    Question(
        "paid_share_by_day",
        "How much of the listening is paid? Paid share of plays per day",
        "The level is the one at the time of each play.",
        chart_paid_share,
    ),
    Question(
        "top_locations",
        "Where do the plays come from?",
        "The location logged with each play (the user's, not the artist's); users is how many"
        " distinct users played from there.",
        chart_ranking("location"),
    ),
)
SUMMARY = Question("summary", "All plays at a glance", "")


def question_files(directory: Path = QUESTIONS_DIR) -> list[Question]:
    """Every SQL file of the directory: the summary, the known questions in page order, then any other."""
    known = {question.name: question for question in (SUMMARY, *QUESTIONS)}
    present = sorted(path.stem for path in directory.glob(f"*{SQL_SUFFIX}"))
    missing = sorted(set(known) - set(present))
    if missing:
        raise FileNotFoundError(f"{directory} lacks {', '.join(name + SQL_SUFFIX for name in missing)}")
    extra = [Question(name, name.replace("_", " "), "") for name in present if name not in known]
    return [SUMMARY, *QUESTIONS, *extra]


# --- The page -------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
.meta, .note { color: #555; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { padding: 0.25rem 0.7rem; border-bottom: 1px solid #eee; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
details pre { background: #f6f8fa; padding: 0.7rem; overflow-x: auto; }
"""


def cell(column: str, value) -> tuple[str, bool]:
    """A value as the page shows it, and whether it is a number (right-aligned)."""
    if value is None:
        return "—", False
    if column.endswith("_share") and isinstance(value, float):
        return f"{value:.1%}", True
    if isinstance(value, bool) or column.endswith("_id") or column in ("hour",):
        return str(value), isinstance(value, int)
    if isinstance(value, int):
        return f"{value:,}", True
    if isinstance(value, float):
        return f"{value:,.2f}", True
    return csv_value(value), False


def html_table(answer: Answer, limit: int = MAX_HTML_ROWS) -> str:
    if not answer.rows:
        return "<p><em>No rows.</em></p>"
    shown = [[cell(column, value) for column, value in zip(answer.columns, row)] for row in answer.rows[:limit]]
    numeric = [any(row[i][1] for row in shown) for i in range(len(answer.columns))]
    head = "".join(
        f'<th class="num">{html.escape(c)}</th>' if n else f"<th>{html.escape(c)}</th>"
        for c, n in zip(answer.columns, numeric)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(text)}</td>' if n else f"<td>{html.escape(text)}</td>"
            for (text, _), n in zip(row, numeric)
        )
        + "</tr>"
        for row in shown
    )
    more = len(answer.rows) - limit
    tail = f"<p class='note'>… and {more:,} more rows in the CSV.</p>" if more > 0 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{tail}"


def matched_sentence(summary: dict) -> str:
    """The honest caveat of every song and artist figure."""
    plays, matched = summary.get("plays") or 0, summary.get("matched_plays") or 0
    if not plays:
        return "There are no plays in these tables."
    return (
        f"{matched:,} of {plays:,} plays ({matched / plays:.1%}) are matched to a song of the catalogue."
        " Song and artist rankings count only those; every other figure counts all plays. The job keeps"
        " no title for an unmatched play (song_id is null), so those cannot be ranked by song."
    )


def render_page(
    location: str, generated: str, counts: dict[str, int], job: dict, sections: list[tuple[Question, Answer]]
) -> str:
    summary_answer = next(answer for question, answer in sections if question is SUMMARY)
    summary = summary_answer.records()[0] if summary_answer.rows else {}
    count_rows = "".join(
        f'<tr><td>{table}</td><td class="num">{counts[table]:,}</td></tr>' for table in etl.TABLE_NAMES
    )
    built = (
        f"Tables built by {html.escape(str(job.get('job', 'etl.py')))} at {html.escape(str(job['finished_at']))}"
        f" from {html.escape(str(job.get('input_uri', '?')))}."
        if job.get("finished_at")
        else f"No run report ({etl.REPORT_NAME}) beside the tables."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Sparkify: what our users play</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Sparkify: what our users play</h1>",
        f'<p class="meta">Tables read: <code>{html.escape(location)}</code><br>'
        f"Report generated {html.escape(generated)} by <code>tools/analyze.py</code> (DuckDB {duckdb.__version__})."
        f"<br>{built}</p>",
        f"<p><strong>{html.escape(matched_sentence(summary))}</strong></p>",
        '<table><thead><tr><th>table</th><th class="num">rows</th></tr></thead>',
        f"<tbody>{count_rows}</tbody></table>",
        "<ul>"
        + "".join(
            f'<li><a href="#{html.escape(q.name)}">{html.escape(q.title)}</a></li>' for q, _ in sections if q.chart
        )
        + "</ul>",
    ]
    for question, answer in sections:
        name = html.escape(question.name)
        parts.append(f'<h2 id="{name}">{html.escape(question.title)}</h2>')
        if question.note:
            parts.append(f'<p class="note">{html.escape(question.note)}</p>')
        if question.chart is not None:
            parts.append(f'<p><img src="{name}{PNG_SUFFIX}" alt="{html.escape(question.title)}"></p>')
        parts.append(html_table(answer))
        sql = (QUESTIONS_DIR / f"{question.name}{SQL_SUFFIX}").read_text(encoding="utf-8")
        parts.append(
            f'<p><a href="{name}{CSV_SUFFIX}">{name}{CSV_SUFFIX}</a> (all rows)</p>'
            f"<details><summary>The query (sql/questions/{name}{SQL_SUFFIX}, runs unchanged in Athena and"
            f" Spark SQL)</summary><pre>{html.escape(sql)}</pre></details>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(root: Path, location: str, out: Path) -> dict[str, int]:
    """Every question's CSV and chart, then index.html; returns the tables' row counts."""
    check_tables(root, location)
    out.mkdir(parents=True, exist_ok=True)
    with connect(root) as con:
        counts = row_counts(con, location)
        sections = []
        for question in question_files():
            sql_path = QUESTIONS_DIR / f"{question.name}{SQL_SUFFIX}"
            try:
                answer = run_query(con, sql_path)
            except duckdb.Error as exc:
                raise RuntimeError(f"{sql_path.relative_to(REPO)} failed: {str(exc).strip().splitlines()[0]}") from exc
            sections.append((question, answer))
    for question, answer in sections:
        write_csv(answer, out / f"{question.name}{CSV_SUFFIX}")
        if question.chart is not None:
            figure = question.chart(answer)
            figure.suptitle(question.title, fontweight="bold")  # the PNG also stands alone (README)
            figure.savefig(out / f"{question.name}{PNG_SUFFIX}", dpi=CHART_DPI)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    page = render_page(location, generated, counts, read_report(root), sections)
    (out / INDEX_NAME).write_text(page, encoding="utf-8")
    return counts


# --- Command line -----------------------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (exit 2), as in etl.py."""

    def error(self, message: str):
        raise UserError(f"{message} (see python tools/analyze.py --help)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="analyze.py", description=__doc__.splitlines()[0])
    parser.add_argument("--tables", help="the output root of etl.py: a local folder or s3://bucket/prefix")
    parser.add_argument("--out", help="folder for index.html, the CSVs and the PNG charts")
    parser.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        help="an S3-compatible endpoint instead of AWS (default: $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the stack trace of an unexpected failure")
    parser.add_argument("--ddl", action="store_true", help="print the Athena CREATE EXTERNAL TABLE statements")
    parser.add_argument("--location", help="with --ddl: the tables' root, s3://BUCKET/PREFIX")
    parser.add_argument(
        "--years",
        default=f"{DEFAULT_YEARS[0]},{DEFAULT_YEARS[1]}",
        help="with --ddl: the play years Athena projects, FIRST,LAST (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.ddl:
        if not args.location:
            parser.error("--ddl needs --location s3://BUCKET/PREFIX")
    elif not (args.tables and args.out):
        parser.error("give --tables OUTPUT and --out DIR (or --ddl --location s3://BUCKET/PREFIX)")
    return args


def main(argv: list[str] | None = None) -> int:
    verbose = False
    try:
        args = parse_args(argv)
        verbose = args.verbose
        if args.ddl:
            sys.stdout.write(athena_ddl(args.location, parse_years(args.years)))
            return 0
        shown = args.tables if urlparse(args.tables).scheme in S3_SCHEMES else str(Path(args.tables).resolve())
        with local_tables(args.tables, args.endpoint_url) as root:
            counts = write_report(root, shown, Path(args.out))
        total = ", ".join(f"{table} {rows:,}" for table, rows in counts.items())
        print(f"report: {Path(args.out) / INDEX_NAME} ({total})")
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT
    except Exception as exc:  # one line, not a stack trace, for an analyst at a terminal
        if verbose:
            traceback.print_exc()
        print(f"error: unexpected failure: {type(exc).__name__}: {exc}", file=sys.stderr)
        return FAILURE_EXIT


if __name__ == "__main__":
    sys.exit(main())
