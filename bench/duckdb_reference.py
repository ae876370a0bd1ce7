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
JSON_GLOB = (
    "**/*.json"  # DuckDB's ** also matches zero directories: flat and S3 layouts.
)
NEXT_SONG_PAGE = "NextSong"
UTC = "UTC"

# Declared types, never inferred. Integer fields are read as JSON so that a value such as
# 1.5 or "abc" is rejected instead of being rounded or silently nulled by the reader.
EVENT_COLUMNS = {
    "artist": "VARCHAR",
    "firstName": "VARCHAR",
    "gender": "VARCHAR",
    "itemInSession": "JSON",
    "lastName": "VARCHAR",
    "length": "DOUBLE",
    "level": "VARCHAR",
    "location": "VARCHAR",
    "page": "VARCHAR",
    "sessionId": "JSON",
    "song": "VARCHAR",
    "ts": "JSON",
    "userAgent": "VARCHAR",
    "userId": "VARCHAR",
}
SONG_COLUMNS = {
    "artist_id": "VARCHAR",
    "artist_latitude": "DOUBLE",
    "artist_location": "VARCHAR",
    "artist_longitude": "DOUBLE",
    "artist_name": "VARCHAR",
    "duration": "DOUBLE",
    "song_id": "VARCHAR",
    "title": "VARCHAR",
    "year": "JSON",
}

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

INTEGER_JSON_TYPES = "('UBIGINT', 'BIGINT')"
USER_ID_PATTERN = "^-?[0-9]+$"


def _json_int(column: str, sql_type: str) -> str:
    """SQL casting a JSON value to an integer type only when it is a JSON integer."""
    return (
        f"CASE WHEN json_type({column}) IN {INTEGER_JSON_TYPES} "
        f"THEN TRY_CAST({column} AS {sql_type}) END"
    )


def _read_json(path: Path, columns: dict[str, str]) -> str:
    """SQL reading every newline-delimited JSON file below ``path`` with fixed types."""
    cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"
    glob = str(path / JSON_GLOB).replace("'", "''")
    return (
        f"read_json('{glob}', format = 'newline_delimited', columns = {cols}, "
        "ignore_errors = true, union_by_name = false)"
    )


def _sql_events(input_dir: Path) -> str:
    """Valid events with typed fields; bad lines and records with a bad ts/userId dropped."""
    return f"""
    CREATE TEMP TABLE events AS
    WITH raw AS (
        SELECT *,
               {_json_int("ts", "BIGINT")} AS ts_ms,
               {_json_int("sessionId", "INTEGER")} AS session_id,
               {_json_int("itemInSession", "INTEGER")} AS item_in_session,
               CASE WHEN regexp_matches(userId, '{USER_ID_PATTERN}')
                    THEN TRY_CAST(userId AS INTEGER) END AS user_id
        FROM {_read_json(input_dir / LOG_DIR, EVENT_COLUMNS)}
    )
    SELECT user_id, ts_ms, session_id, item_in_session, page, firstName AS first_name,
           lastName AS last_name, gender, level, song, artist, length, location,
           CASE WHEN length(userAgent) >= 2 AND starts_with(userAgent, '"')
                     AND ends_with(userAgent, '"')
                THEN userAgent[2:-2] ELSE userAgent END AS user_agent
    FROM raw
    -- ts: a JSON integer or absent; userId: "" or an integer that fits an int.
    WHERE (ts IS NULL OR ts_ms IS NOT NULL)
      AND userId IS NOT NULL
      AND (userId = '' OR user_id IS NOT NULL)
    """


def _sql_song_records(input_dir: Path) -> str:
    """Valid song records (song_id, title and artist_id present), one row per record."""
    return f"""
    CREATE TEMP TABLE song_records AS
    SELECT song_id, title, artist_id, {_json_int("year", "INTEGER")} AS year, duration,
           NULLIF(artist_name, '') AS artist_name,
           NULLIF(artist_location, '') AS artist_location,
           artist_latitude, artist_longitude
    FROM {_read_json(input_dir / SONG_DIR, SONG_COLUMNS)}
    WHERE NULLIF(song_id, '') IS NOT NULL
      AND NULLIF(title, '') IS NOT NULL
      AND NULLIF(artist_id, '') IS NOT NULL
    """


SQL_SONGS = """
CREATE TEMP TABLE songs AS
SELECT song_id, title, artist_id, year, duration, artist_name
FROM song_records
QUALIFY row_number() OVER (
    PARTITION BY song_id
    ORDER BY title, artist_id, year NULLS LAST, duration NULLS LAST, artist_name NULLS LAST
) = 1
"""

SQL_ARTISTS = """
CREATE TEMP TABLE artists AS
SELECT artist_id, artist_name AS name, artist_location AS location,
       artist_latitude AS latitude, artist_longitude AS longitude
FROM song_records
QUALIFY row_number() OVER (
    PARTITION BY artist_id
    ORDER BY (artist_name IS NOT NULL)::INT + (artist_location IS NOT NULL)::INT
             + (artist_latitude IS NOT NULL)::INT + (artist_longitude IS NOT NULL)::INT DESC,
             song_id, artist_name NULLS LAST, artist_location NULLS LAST,
             artist_latitude NULLS LAST, artist_longitude NULLS LAST
) = 1
"""

SQL_USERS = """
CREATE TEMP TABLE users AS
SELECT user_id, first_name, last_name, gender, level
FROM events
WHERE user_id IS NOT NULL
QUALIFY row_number() OVER (
    PARTITION BY user_id
    ORDER BY ts_ms DESC NULLS LAST, session_id DESC NULLS LAST,
             item_in_session DESC NULLS LAST, level NULLS LAST, first_name NULLS LAST,
             last_name NULLS LAST, gender NULLS LAST
) = 1
"""

SQL_SONGPLAYS = f"""
CREATE TEMP TABLE songplays AS
WITH plays AS (
    SELECT *
    FROM events
    WHERE page = '{NEXT_SONG_PAGE}' AND user_id IS NOT NULL AND ts_ms IS NOT NULL
    -- The same (user, session, item, ts) seen twice is one play.
    QUALIFY row_number() OVER (
        PARTITION BY user_id, session_id, item_in_session, ts_ms
        ORDER BY song NULLS LAST, artist NULLS LAST, length NULLS LAST, level NULLS LAST,
                 location NULLS LAST, user_agent NULLS LAST
    ) = 1
),
matched AS (
    SELECT p.*, s.song_id, s.artist_id
    FROM plays p
    LEFT JOIN songs s ON p.song = s.title AND p.artist = s.artist_name
    -- Several candidates: closest duration, then smallest song_id.
    QUALIFY row_number() OVER (
        PARTITION BY p.user_id, p.session_id, p.item_in_session, p.ts_ms
        ORDER BY abs(s.duration - p.length) NULLS LAST, s.song_id NULLS LAST
    ) = 1
)
SELECT row_number() OVER (
           ORDER BY ts_ms, user_id, session_id NULLS FIRST, item_in_session NULLS FIRST
       )::BIGINT AS songplay_id,
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


def build_reference(
    input_dir: str | Path, output_dir: str | Path, timings: dict | None = None
) -> dict[str, int]:
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
        counts = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES
        }
    stages["total"] = time.perf_counter() - start
    return counts


def read_output(
    con: duckdb.DuckDBPyConnection, output_dir: str | Path, table: str
) -> duckdb.DuckDBPyRelation:
    """A table written by the job or the reference, hive partition columns included."""
    glob = str(Path(output_dir) / table / "**" / "*.parquet").replace("'", "''")
    return con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")


def main(argv: list[str] | None = None) -> int:
    """CLI: build the reference tables and print row counts and stage seconds as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input", required=True, help="root with song_data/ and log_data/"
    )
    parser.add_argument(
        "--output", required=True, help="root for the five parquet tables"
    )
    args = parser.parse_args(argv)
    timings: dict[str, float] = {}
    counts = build_reference(args.input, args.output, timings)
    seconds = {k: round(v, 3) for k, v in timings.items()}
    json.dump({"tables": counts, "seconds": seconds}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
