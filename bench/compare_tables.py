"""Compare two outputs of the five tables (the job's and the DuckDB reference's) row for row.

Each table is read with its hive partition columns and projected to a canonical,
type-neutral form (integers as BIGINT, doubles rounded, timestamps as TIMESTAMP, the
rest as text), so that two writers' parquet types and partition layouts do not matter.
The comparison runs inside DuckDB (EXCEPT ALL both ways), so tables of millions of rows
compare without being loaded into Python. Used by the differential test and the scale run.
"""

from __future__ import annotations

from pathlib import Path

import duckdb_reference as ref

FLOAT_DIGITS = 6
EXAMPLES = 3
SIDES = ("job", "reference")
# The machine is shared: millions of rows spill to disk rather than take most of its memory.
MEMORY_LIMIT = "4GB"
INT = "TRY_CAST(CAST({c} AS VARCHAR) AS BIGINT)"
DBL = "round(CAST({c} AS DOUBLE), " + str(FLOAT_DIGITS) + ")"
TS = "CAST({c} AS TIMESTAMP)"
STR = "CAST({c} AS VARCHAR)"
# Canonical projection of each table (songplay_id included: it is the play's identity,
# so both implementations must give the same one).
COMPARE_COLUMNS = {
    "songplays": {
        "songplay_id": STR,
        "start_time": TS,
        "user_id": INT,
        "level": STR,
        "song_id": STR,
        "artist_id": STR,
        "session_id": INT,
        "location": STR,
        "user_agent": STR,
        "year": INT,
        "month": INT,
    },
    "users": {"user_id": INT, "first_name": STR, "last_name": STR, "gender": STR, "level": STR},
    "songs": {"song_id": STR, "title": STR, "artist_id": STR, "year": INT, "duration": DBL},
    "artists": {"artist_id": STR, "name": STR, "location": STR, "latitude": DBL, "longitude": DBL},
    "time": {"start_time": TS, "hour": INT, "day": INT, "week": INT, "month": INT, "year": INT, "weekday": INT},
}


def canonical(con, output_dir: str | Path, table: str):
    """A written table as a DuckDB relation of canonical columns."""
    exprs = ", ".join(f"{f.format(c=c)} AS {c}" for c, f in COMPARE_COLUMNS[table].items())
    return ref.read_output(con, output_dir, table).select(exprs)


def canonical_rows(output_dir: str | Path, table: str) -> list[tuple]:
    """Sorted canonical rows of a written table (small tables: they come into Python)."""
    with ref.connect() as con:
        rows = canonical(con, output_dir, table).fetchall()
    return sorted(rows, key=lambda r: tuple((v is None, str(v)) for v in r))


def differences(job_dir: str | Path, reference_dir: str | Path, table: str) -> dict:
    """Row counts of both sides, rows only on one side (EXCEPT ALL: as multisets) and examples."""
    with ref.connect() as con:
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        # Rows are compared as multisets: keeping file order would buffer every small
        # file's rows (90k songs files ran out of 4 GB with it, and need 0.6 GB without).
        con.execute("SET preserve_insertion_order = false")
        canonical(con, job_dir, table).to_table("job_rows")
        canonical(con, reference_dir, table).to_table("reference_rows")
        result = {f"rows_{side}": con.sql(f"SELECT count(*) FROM {side}_rows").fetchone()[0] for side in SIDES}
        for side, other in zip(SIDES, reversed(SIDES)):
            only = f"SELECT * FROM {side}_rows EXCEPT ALL SELECT * FROM {other}_rows"
            con.execute(f"CREATE TEMP TABLE only_{side} AS {only}")
            result[f"only_{side}"] = con.sql(f"SELECT count(*) FROM only_{side}").fetchone()[0]
            examples = con.sql(f"SELECT * FROM only_{side} LIMIT {EXAMPLES}").fetchall()
            result[f"examples_only_{side}"] = [str(row) for row in examples]
        return result


def equal(diff: dict) -> bool:
    """Same rows on both sides, each as many times."""
    return diff["only_job"] == diff["only_reference"] == 0
