"""Single-node DuckDB reference of the Sparkify ETL (benchmark and tests only).

It computes the same five tables as ``etl.py`` with plain SQL so that the Spark job can be
checked against an independent implementation and its speed compared with a
single-process engine. The job never imports this module.

Usage::

    .venv/bin/python bench/duckdb_reference.py --input ../shared/data/sample --output /tmp/ref
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import duckdb

SONG_DIR = "song_data"
LOG_DIR = "log_data"
JSON_GLOB = "**/*.json"  # DuckDB's ** also matches zero directories: flat and S3 layouts.
NEXT_SONG_PAGE = "NextSong"
UTC = "UTC"

# Declared types, never inferred, mirroring the job's Spark schemas. Strings are read as
# VARCHAR (a number or object becomes its text, as in Spark); every numeric field is read
# as JSON and checked against its Spark type, because DuckDB's own casts would round 1.5
# into an integer or null a bad value silently, where the job rejects the whole record.
STRING, INT, LONG, DOUBLE = "string", "int", "long", "double"
EVENT_FIELDS = {
    "artist": STRING,
    "auth": STRING,
    "firstName": STRING,
    "gender": STRING,
    "itemInSession": INT,
    "lastName": STRING,
    "length": DOUBLE,
    "level": STRING,
    "location": STRING,
    "method": STRING,
    "page": STRING,
    "registration": DOUBLE,
    "sessionId": INT,
    "song": STRING,
    "status": INT,
    "ts": LONG,
    "userAgent": STRING,
    "userId": STRING,
}
EVENT_REQUIRED = ("ts", "userId", "sessionId", "itemInSession", "page")
SONG_FIELDS = {
    "num_songs": INT,
    "artist_id": STRING,
    "artist_latitude": DOUBLE,
    "artist_longitude": DOUBLE,
    "artist_location": STRING,
    "artist_name": STRING,
    "song_id": STRING,
    "title": STRING,
    "duration": DOUBLE,
    "year": INT,
}
SONG_REQUIRED_TEXT = ("song_id", "title", "artist_id")
SQL_TYPES = {INT: "INTEGER", LONG: "BIGINT", DOUBLE: "DOUBLE"}
JSON_INTEGER_TYPES = "('UBIGINT', 'BIGINT')"
JSON_NUMBER_TYPES = "('UBIGINT', 'BIGINT', 'DOUBLE')"
# Strings Spark's JSON reader accepts for a double (allowNonNumericNumbers).
NON_NUMERIC_DOUBLES = {
    "NaN": "'NaN'",
    "+INF": "'Infinity'",
    "+Infinity": "'Infinity'",
    "Infinity": "'Infinity'",
    "-INF": "'-Infinity'",
    "-Infinity": "'-Infinity'",
}
USER_ID_PATTERN = "^[0-9]+$"
LOGGED_OUT_USER_ID = ""
MAX_TS_MS = (1 << 43) - 1  # the job rejects later timestamps as corrupt clocks
TS_DIGITS = 13  # songplay_id = ts zero-padded to 13 digits, user, session, item

# Output tables: name -> hive partition columns (empty: not partitioned).
PARTITIONS = {
    "songplays": ("year", "month"),
    "users": (),
    "songs": ("year", "artist_id"),
    "artists": (),
    "time": ("year", "month"),
}
TABLES = tuple(PARTITIONS)
PART_FILE_PATTERN = "part-{i}"


def _q(name: str) -> str:
    return f'"{name}"'


def _typed(name: str, kind: str) -> str:
    """SQL value of a field read as JSON, converted to its Spark type (NULL if it is wrong)."""
    col = _q(name)
    if kind in (INT, LONG):
        return f"CASE WHEN json_type({col}) IN {JSON_INTEGER_TYPES} THEN TRY_CAST({col} AS {SQL_TYPES[kind]}) END"
    specials = " ".join(f"WHEN '{text}' THEN CAST({value} AS DOUBLE)" for text, value in NON_NUMERIC_DOUBLES.items())
    return (
        f"CASE WHEN json_type({col}) IN {JSON_NUMBER_TYPES} THEN TRY_CAST({col} AS DOUBLE) "
        f"WHEN json_type({col}) = 'VARCHAR' THEN CASE {col} ->> '$' {specials} END END"
    )


def _typed_select(fields: dict[str, str]) -> str:
    """Typed columns plus ``_type_ok``: no present field has a value of the wrong type."""
    values, checks = [], []
    for name, kind in fields.items():
        if kind == STRING:
            values.append(_q(name))
            continue
        typed = _typed(name, kind)
        values.append(f"{typed} AS {_q(name)}")
        checks.append(f"({_q(name)} IS NULL OR ({typed}) IS NOT NULL)")
    return ", ".join(values) + f", ({' AND '.join(checks)}) AS _type_ok"


def _read_json(path: Path, fields: dict[str, str]) -> str:
    """SQL reading every newline-delimited JSON file below ``path`` with fixed types.

    ignore_errors turns a line that is not JSON into an all-NULL row, which then fails
    the required-field checks, as the job rejects it as malformed.
    """
    types = {name: ("VARCHAR" if kind == STRING else "JSON") for name, kind in fields.items()}
    cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in types.items()) + "}"
    glob = str(path / JSON_GLOB).replace("'", "''")
    return (
        f"read_json('{glob}', format = 'newline_delimited', columns = {cols}, "
        "ignore_errors = true, filename = '_source_file')"
    )


def _blank(column: str) -> str:
    """Null or only spaces (Spark's trim, like DuckDB's, strips spaces only)."""
    return f"({column} IS NULL OR trim({column}) = '')"


def _sql_events(input_dir: Path) -> str:
    """Valid events: every field of its type, required fields present, sane userId and ts."""
    required = " AND ".join(f"{_q(name)} IS NOT NULL" for name in EVENT_REQUIRED)
    return f"""
    CREATE TEMP TABLE events AS
    WITH raw AS (
        SELECT {_typed_select(EVENT_FIELDS)}, _source_file
        FROM {_read_json(input_dir / LOG_DIR, EVENT_FIELDS)}
    )
    SELECT TRY_CAST(NULLIF(userId, '{LOGGED_OUT_USER_ID}') AS INTEGER) AS user_id,
           userId AS raw_user_id, ts AS ts_ms, sessionId AS session_id,
           itemInSession AS item_in_session, page, firstName AS first_name,
           lastName AS last_name, gender, level, song, artist, length, location,
           userAgent AS raw_user_agent,
           regexp_replace(userAgent, '^"(.*)"$', '\\1') AS user_agent, _source_file
    FROM raw
    WHERE _type_ok AND {required}
      AND (userId = '{LOGGED_OUT_USER_ID}'
           OR (regexp_matches(userId, '{USER_ID_PATTERN}')
               AND TRY_CAST(userId AS INTEGER) IS NOT NULL))
      AND ts BETWEEN 0 AND {MAX_TS_MS}
    """


def _sql_song_records(input_dir: Path) -> str:
    """Valid song records: every field of its type, song_id, title and artist_id not blank."""
    required = " AND ".join(f"NOT {_blank(name)}" for name in SONG_REQUIRED_TEXT)
    return f"""
    CREATE TEMP TABLE song_records AS
    SELECT * EXCLUDE (_type_ok)
    FROM (
        SELECT {_typed_select(SONG_FIELDS)}, _source_file
        FROM {_read_json(input_dir / SONG_DIR, SONG_FIELDS)}
    )
    WHERE _type_ok AND {required}
    """


# A song_id delivered several times: the record of the first file (by path) wins, then
# the smallest values, as the job's min(struct(path, ...)) does (nulls sort first).
SQL_SONGS = """
CREATE TEMP TABLE songs AS
SELECT song_id, title, artist_id, year, duration, artist_name, artist_location,
       artist_latitude, artist_longitude
FROM song_records
QUALIFY row_number() OVER (
    PARTITION BY song_id
    ORDER BY _source_file NULLS FIRST, num_songs NULLS FIRST, artist_id NULLS FIRST,
             artist_latitude NULLS FIRST, artist_longitude NULLS FIRST,
             artist_location NULLS FIRST, artist_name NULLS FIRST, title NULLS FIRST,
             duration NULLS FIRST, year NULLS FIRST
) = 1
"""

# Per artist: the song record (after the song_id de-duplication) with the most known
# fields among name, location, latitude, longitude; ties go to the smallest song_id.
SQL_ARTISTS = """
CREATE TEMP TABLE artists AS
WITH cleaned AS (
    SELECT artist_id, song_id,
           CASE WHEN trim(artist_name) = '' THEN NULL ELSE artist_name END AS name,
           CASE WHEN trim(artist_location) = '' THEN NULL ELSE artist_location END
               AS location,
           artist_latitude AS latitude, artist_longitude AS longitude
    FROM songs
)
SELECT artist_id, name, location, latitude, longitude
FROM cleaned
QUALIFY row_number() OVER (
    PARTITION BY artist_id
    ORDER BY (name IS NOT NULL)::INT + (location IS NOT NULL)::INT
             + (latitude IS NOT NULL)::INT + (longitude IS NOT NULL)::INT DESC,
             song_id
) = 1
"""

# Each user as of the latest valid event of any page: greatest (ts, session, item), then
# the greatest remaining values, as the job's max(struct(...)) does (nulls sort first).
SQL_USERS = """
CREATE TEMP TABLE users AS
SELECT user_id, first_name, last_name, gender, level
FROM events
WHERE user_id IS NOT NULL
QUALIFY row_number() OVER (
    PARTITION BY user_id
    ORDER BY ts_ms DESC, session_id DESC, item_in_session DESC, level DESC NULLS LAST,
             first_name DESC NULLS LAST, last_name DESC NULLS LAST, gender DESC NULLS LAST
) = 1
"""

SQL_SONGPLAYS = f"""
CREATE TEMP TABLE songplays AS
WITH plays AS (
    SELECT *
    FROM events
    WHERE page = '{NEXT_SONG_PAGE}' AND user_id IS NOT NULL
    -- The same (user, session, item, ts) seen twice is one play; the copy of the first
    -- file, then the first by the remaining columns (nulls first) is kept, as in the job.
    QUALIFY row_number() OVER (
        PARTITION BY ts_ms, user_id, session_id, item_in_session
        ORDER BY _source_file, level NULLS FIRST, song NULLS FIRST, artist NULLS FIRST,
                 length NULLS FIRST, location NULLS FIRST, raw_user_agent NULLS FIRST
    ) = 1
),
matched AS (
    SELECT p.*, s.song_id, s.artist_id
    FROM plays p
    LEFT JOIN songs s ON p.song = s.title AND p.artist = s.artist_name
    -- Several candidates: closest duration, then smallest song_id.
    QUALIFY row_number() OVER (
        PARTITION BY p.ts_ms, p.user_id, p.session_id, p.item_in_session
        ORDER BY abs(s.duration - p.length) NULLS LAST, s.song_id NULLS LAST,
                 s.artist_id NULLS LAST
    ) = 1
)
SELECT lpad(ts_ms::VARCHAR, {TS_DIGITS}, '0') || '-' || user_id || '-' || session_id || '-' || item_in_session
           AS songplay_id,
       epoch_ms(ts_ms)::TIMESTAMPTZ AS start_time,
       user_id, level, song_id, artist_id, session_id, location, user_agent,
       year(epoch_ms(ts_ms))::INTEGER AS year,
       month(epoch_ms(ts_ms))::INTEGER AS month
FROM matched
"""

SQL_TIME = """
CREATE TEMP TABLE time AS
SELECT start_time,
       hour(start_time)::INTEGER AS hour,
       day(start_time)::INTEGER AS day,
       weekofyear(start_time)::INTEGER AS week,
       month(start_time)::INTEGER AS month,
       year(start_time)::INTEGER AS year,
       isodow(start_time)::INTEGER AS weekday
FROM (SELECT DISTINCT start_time FROM songplays)
"""

SELECT_COLUMNS = {
    "songplays": "songplay_id, start_time, user_id, level, song_id, artist_id, session_id, "
    "location, user_agent, year, month",
    "users": "user_id, first_name, last_name, gender, level",
    "songs": "song_id, title, artist_id, year, duration",
    "artists": "artist_id, name, location, latitude, longitude",
    "time": "start_time, hour, day, week, month, year, weekday",
}


def connect() -> duckdb.DuckDBPyConnection:
    """In-memory connection pinned to UTC so timestamps match the job's session zone."""
    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{UTC}'")
    con.execute("SET enable_progress_bar = false")
    return con


def _write_table(con: duckdb.DuckDBPyConnection, table: str, output_dir: Path) -> None:
    """Replace ``output_dir/table`` with parquet files in the job's hive layout."""
    target = output_dir / table
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    query = f"SELECT {SELECT_COLUMNS[table]} FROM {table}"
    partition_by = PARTITIONS[table]
    if partition_by:
        dest = str(target).replace("'", "''")
        options = (
            f"FORMAT PARQUET, PARTITION_BY ({', '.join(partition_by)}), "
            f"OVERWRITE_OR_IGNORE, FILENAME_PATTERN '{PART_FILE_PATTERN}'"
        )
    else:
        dest = str(target / "part-0.parquet").replace("'", "''")
        options = "FORMAT PARQUET"
    con.execute(f"COPY ({query}) TO '{dest}' ({options})")


def build_reference(input_dir: str | Path, output_dir: str | Path, timings: dict | None = None) -> dict[str, int]:
    """Build the five tables from ``input_dir`` into ``output_dir``; return row counts.

    ``timings``, when given, receives seconds per stage (read, transform, write, total).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    for sub in (SONG_DIR, LOG_DIR):
        if not (input_dir / sub).is_dir():
            raise FileNotFoundError(f"missing input folder {input_dir / sub}")
    output_dir.mkdir(parents=True, exist_ok=True)
    stages = timings if timings is not None else {}
    start = time.perf_counter()
    with connect() as con:
        t0 = time.perf_counter()
        con.execute(_sql_song_records(input_dir))
        stages["read_songs"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        con.execute(_sql_events(input_dir))
        stages["read_events"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for sql in (SQL_SONGS, SQL_ARTISTS, SQL_USERS, SQL_SONGPLAYS, SQL_TIME):
            con.execute(sql)
        stages["transform"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for table in TABLES:
            _write_table(con, table, output_dir)
        stages["write"] = time.perf_counter() - t0
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    stages["total"] = time.perf_counter() - start
    return counts


def read_output(con: duckdb.DuckDBPyConnection, output_dir: str | Path, table: str) -> duckdb.DuckDBPyRelation:
    """A table written by the job or the reference, hive partition columns included."""
    glob = str(Path(output_dir) / table / "**" / "*.parquet").replace("'", "''")
    return con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")


def main(argv: list[str] | None = None) -> int:
    """CLI: build the reference tables and print row counts and stage seconds as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="root with song_data/ and log_data/")
    parser.add_argument("--output", required=True, help="root for the five parquet tables")
    args = parser.parse_args(argv)
    timings: dict[str, float] = {}
    counts = build_reference(args.input, args.output, timings)
    seconds = {k: round(v, 3) for k, v in timings.items()}
    json.dump({"tables": counts, "seconds": seconds}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
