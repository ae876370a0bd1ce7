"""Differential tests: the Spark job (etl.py) against the DuckDB reference (bench/).

Two independent implementations of the same specification must write the same five tables.
A handcrafted dataset pins the edge cases (several song matches, ties, duplicates, bad
records, ISO weeks across a year end); a generated dataset, when the generator is present,
adds volume. The reference alone is also checked against the published figures of the
shared sample so that a disagreement can be attributed to the right side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import jobrun
import pytest

import etl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import compare_tables as compare  # noqa: E402
import duckdb_reference as ref  # noqa: E402

ETL = REPO / "etl.py"
GENERATOR = REPO / "tools" / "generate_data.py"
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "sample"
GEN_TIMEOUT_S = 300
GEN_SONGS = 300
GEN_EVENTS = 5_000
GEN_SEED = 7
MAX_REJECT_RATE = 1.0

SAMPLE_FIGURES = {
    "songplays": 6820,
    "users": 97,
    "songs": 71,
    "artists": 69,
    "time": 6813,
}
SAMPLE_MATCH = ("SOZCTXZ12AB0182364", 15, 818)


def ts_ms(*parts: int) -> int:
    """Epoch milliseconds of a UTC date-time."""
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


# ---------------------------------------------------------------- handcrafted dataset
QUOTED_UA = '"Mozilla/5.0 (X11; Linux x86_64)"'
PLAIN_UA = "curl/8.0"
SUNDAY = (2018, 11, 4, 10, 0, 0)  # ISO week 44, weekday 7
YEAR_END_MONDAY = (2018, 12, 31, 23, 30, 0)  # ISO week 1 of 2019, weekday 1
NEW_YEAR = (2019, 1, 1, 0, 10, 0)


def song(song_id, title, artist_id, name, location, lat, lon, duration, year) -> dict:
    """A Million Song Dataset record."""
    return {
        "num_songs": 1,
        "artist_id": artist_id,
        "artist_latitude": lat,
        "artist_longitude": lon,
        "artist_location": location,
        "artist_name": name,
        "song_id": song_id,
        "title": title,
        "duration": duration,
        "year": year,
    }


SONGS = {
    # file -> records (one JSON object per line)
    "A/A/A/TRAAA001.json": [
        song("SOAAA1", "Hello", "AR1", "Adele", "London", 51.5, -0.1, 200.0, 2015),
    ],
    "A/A/A/TRAAA002.json": [
        song("SOAAA2", "Hello", "AR1", "Adele", "", None, None, 210.0, 2016),
    ],
    "A/A/B/TRAAB003.json": [  # two records in one file, equally close to length 110
        song("SOAAA4", "Twin", "AR2", "Echo", "", None, None, 120.0, 0),
        song("SOAAA3", "Twin", "AR2", "Echo", "", None, None, 100.0, 0),
    ],
    "A/A/B/TRAAB005.json": [  # no song_id: skipped
        song(None, "Ghost", "AR9", "Nobody", "Nowhere", None, None, 99.0, 2001),
    ],
    "A/B/A/TRABA006.json": [  # every artist field empty -> all null
        song("SOAAA6", "Lonely", "AR3", "", "", None, None, 180.5, 1999),
    ],
    "A/B/A/TRABA007.json": [  # AR4: two records with 2 non-null fields -> smallest song_id
        song("SOBBB2", "Tie B", "AR4", "Tie", "Paris", None, None, 150.0, 2010),
    ],
    "A/B/B/TRABB009.json": [  # year as a string: wrong type, record rejected
        song("SOCCC1", "Strange", "AR5", "Odd", "", None, None, 100.0, "1999"),
    ],
    "A/B/B/TRABB010.json": [  # SOAAA6 again, in a later file: the first file's record wins
        song("SOAAA6", "Lonely (dup)", "AR3", "Dup", "Rome", None, None, 1.0, 1999),
    ],
    "A/B/B/TRABB008.json": [
        song("SOBBB1", "Tie A", "AR4", "Tie", "", 1.0, None, 140.0, 2010),
    ],
}  # fmt: skip


def event(user: str, session: int, item: int, ts: object, page: str = "NextSong", **kw):
    """An Eventsim record with plausible defaults."""
    base = {
        "artist": None,
        "auth": "Logged In",
        "firstName": f"First{user}",
        "gender": "F",
        "itemInSession": item,
        "lastName": f"Last{user}",
        "length": None,
        "level": "free",
        "location": "Springfield, IL",
        "method": "PUT" if page == "NextSong" else "GET",
        "page": page,
        "registration": 1540919166796.0,
        "sessionId": session,
        "song": None,
        "status": 200,
        "ts": ts,
        "userAgent": QUOTED_UA,
        "userId": user,
    }
    base.update(kw)
    return base


def play(user, session, item, ts, song, artist, length, **kw):
    """A NextSong event."""
    return event(user, session, item, ts, song=song, artist=artist, length=length, **kw)


T0 = ts_ms(*SUNDAY)
T1 = ts_ms(*YEAR_END_MONDAY)
T2 = ts_ms(*NEW_YEAR)
MINUTE_MS = 60_000
DUP_PLAY = play("10", 1, 3, T0 + 3 * MINUTE_MS, "Unknown", "Nobody", 123.0)

LOG_FILES = {
    "2018/11/2018-11-04-events.json": [
        event("10", 1, 0, T0, page="Home"),
        play("10", 1, 1, T0 + MINUTE_MS, "Hello", "Adele", 204.0),  # -> SOAAA1
        play("10", 1, 2, T0 + 2 * MINUTE_MS, "Hello", "Adele", 209.0),  # -> SOAAA2
        DUP_PLAY,  # no match, seen twice
        DUP_PLAY,
        play("10", 1, 4, T0 + 4 * MINUTE_MS, "Twin", "Echo", 110.0),  # tie -> SOAAA3
        play("10", 1, 5, T0 + 5 * MINUTE_MS, "Lonely", "Someone", 180.5),  # no match
        play("", 7, 0, T0 + 4 * MINUTE_MS, "Hello", "Adele", 200.0, userId=""),  # logged out
        event("11", 2, 0, T0, page="Home", level="paid", gender="M"),  # never plays
        # Same ts for two users: one time row; user 12's item 4 beats item 3 at equal ts.
        play("12", 3, 3, T0 + MINUTE_MS, "Tie A", "Tie", 140.0, level="free"),
        play("12", 3, 4, T0 + MINUTE_MS, "Tie B", "Tie", 150.0, level="paid",
             userAgent=PLAIN_UA),
        # user 13: the later record has a non-integer ts and is skipped.
        play("13", 4, 0, T0, "Hello", "Adele", 1.0, level="free"),
        event("13", 4, 1, "abc", page="Upgrade", level="paid"),
        event("13", 4, 2, 1.5e12, page="Upgrade", level="paid"),
        event("abc", 5, 0, T0 + 9 * MINUTE_MS, page="NextSong", song="Hello", artist="Adele"),
        # Wrong types reject the whole record; "NaN" is a valid double for Spark's reader.
        play("11", 2, 1, T0 + 6 * MINUTE_MS, "Hello", "Adele", "abc"),
        play("11", 2, 2, T0 + 7 * MINUTE_MS, "Hello", "Adele", "NaN"),  # -> SOAAA1 by id
        play("11", "2", 3, T0 + 7 * MINUTE_MS, "Hello", "Adele", 200.0),
        play(" 12", 3, 9, T0 + 9 * MINUTE_MS, "Hello", "Adele", 200.0),
        play("-1", 3, 9, T0 + 9 * MINUTE_MS, "Hello", "Adele", 200.0),
        play(14, 10, 0, T0 + 8 * MINUTE_MS, "Twin", "Echo", 100.0),  # numeric userId: text
        play("14", 10, 1, (1 << 43) + 1, "Twin", "Echo", 100.0),  # ts beyond the job's cap
    ],
    # Flat file next to the S3-style folders: read too (files at any depth).
    "2018-12-31-events.json": [
        play("10", 8, 0, T1, "Hello", "Adele", 205.0, level="paid"),  # tie 5/5 -> SOAAA1
        play("11", 9, 0, T2, "Lonely", None, 180.5, level="paid"),  # artist null: no match
    ],
}  # fmt: skip
BAD_LOG_LINE = '{"userId": "10", "page": "NextSong", "ts": 15'  # truncated JSON

HANDCRAFTED_EXPECTED = {
    "songplays": 12,
    "users": 5,
    "songs": 7,
    "artists": 4,
    "time": 10,
}
HANDCRAFTED_LEVELS = {10: "paid", 11: "paid", 12: "paid", 13: "free", 14: "free"}
HANDCRAFTED_MATCHES = {  # (user, session, item) -> song_id
    (10, 1, 1): "SOAAA1",
    (10, 1, 2): "SOAAA2",
    (10, 1, 4): "SOAAA3",
    (12, 3, 3): "SOBBB1",
    (12, 3, 4): "SOBBB2",
    (13, 4, 0): "SOAAA1",
    (10, 8, 0): "SOAAA1",
    (11, 2, 2): "SOAAA1",
    (14, 10, 0): "SOAAA3",
}


def write_handcrafted(root: Path) -> Path:
    """Write the handcrafted dataset under ``root`` (S3-like nesting plus a flat file)."""
    for rel, records in SONGS.items():
        path = root / ref.SONG_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(json.dumps(r) for r in records))
    for rel, records in LOG_FILES.items():
        path = root / ref.LOG_DIR / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(r) for r in records]
        if rel.startswith("2018/"):
            lines.insert(2, BAD_LOG_LINE)
        path.write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------- helpers
def run_job(spark, input_dir: Path, output_dir: Path) -> dict:
    """The whole job in this process (etl.run on the session's Spark); returns its report."""
    # The handcrafted data is mostly edge cases: let rejects through instead of failing.
    settings = jobrun.run_settings(input_dir, output_dir, max_reject_rate=MAX_REJECT_RATE)
    return etl.run(spark, settings)


def songplay_ids(output_dir: Path) -> list:
    """All songplay_id values of a written songplays table."""
    with ref.connect() as con:
        rel = ref.read_output(con, output_dir, "songplays")
        return [r[0] for r in rel.select("songplay_id").fetchall()]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def handcrafted(tmp_path_factory) -> Path:
    return write_handcrafted(tmp_path_factory.mktemp("handcrafted"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    if not GENERATOR.exists():
        pytest.skip(f"generator {GENERATOR.relative_to(REPO)} not present yet")
    out = tmp_path_factory.mktemp("generated") / "input"
    cmd = [sys.executable, str(GENERATOR), "--songs", str(GEN_SONGS), "--events"]
    cmd += [
        str(GEN_EVENTS),
        "--seed",
        str(GEN_SEED),
        "--out",
        str(out),
        "--layout",
        "s3",
    ]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=GEN_TIMEOUT_S)
    return out


@pytest.fixture(scope="module", params=["handcrafted", "generated"])
def both_outputs(request, spark, tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    """(job output, reference output, job report, reference counts) for one dataset."""
    if not ETL.exists():
        pytest.skip("etl.py not present yet")
    input_dir = request.getfixturevalue(request.param)
    work = tmp_path_factory.mktemp(f"out-{request.param}")
    report = run_job(spark, input_dir, work / "job")
    counts = ref.build_reference(input_dir, work / "reference")
    return work / "job", work / "reference", report, counts


# ---------------------------------------------------------------- reference alone
def test_reference_handcrafted_expectations(handcrafted, tmp_path):
    """The reference implements the spec on the edge cases (checked by hand)."""
    counts = ref.build_reference(handcrafted, tmp_path)
    assert counts == HANDCRAFTED_EXPECTED
    with ref.connect() as con:
        plays = ref.read_output(con, tmp_path, "songplays")
        matched = plays.filter("song_id IS NOT NULL").select("user_id, session_id, song_id")
        assert sorted(r[2] for r in matched.fetchall()) == sorted(HANDCRAFTED_MATCHES.values())
        agents = {r[0] for r in plays.select("user_agent").distinct().fetchall()}
        assert agents == {QUOTED_UA.strip('"'), PLAIN_UA}
        users = ref.read_output(con, tmp_path, "users").select("user_id, level")
        assert dict(users.fetchall()) == HANDCRAFTED_LEVELS
        artists = ref.read_output(con, tmp_path, "artists")
        by_id = {r[0]: r[1:] for r in artists.select("artist_id, name, location, latitude, longitude").fetchall()}
        assert by_id["AR1"] == ("Adele", "London", 51.5, -0.1)
        assert by_id["AR3"] == (None, None, None, None)
        assert by_id["AR4"] == ("Tie", None, 1.0, None)
        year_end = (
            ref.read_output(con, tmp_path, "time")
            .filter(f"epoch_ms(start_time) = {T1}")
            .select("week, weekday, year, month")
            .fetchall()
        )
        assert year_end == [(1, 1, 2018, 12)]


def test_reference_on_shared_sample(tmp_path):
    """The reference reproduces the published figures of the shared sample."""
    if not (SHARED_SAMPLE / ref.LOG_DIR).is_dir():
        pytest.skip(f"shared sample not found at {SHARED_SAMPLE}")
    counts = ref.build_reference(SHARED_SAMPLE, tmp_path)
    assert counts == SAMPLE_FIGURES
    with ref.connect() as con:
        plays = ref.read_output(con, tmp_path, "songplays")
        matched = plays.filter("song_id IS NOT NULL").select("song_id, user_id, session_id")
        assert matched.fetchall() == [SAMPLE_MATCH]


# ---------------------------------------------------------------- job vs reference
def test_job_and_reference_row_counts(both_outputs):
    """Same number of rows in every table; the job's report agrees with its files."""
    job_dir, _, report, ref_counts = both_outputs
    job_counts = {t: len(compare.canonical_rows(job_dir, t)) for t in ref.TABLES}
    assert job_counts == ref_counts
    if "tables" in report:
        assert {t: report["tables"][t] for t in ref.TABLES} == ref_counts


@pytest.mark.parametrize("table", ref.TABLES)
def test_job_and_reference_contents(both_outputs, table):
    """Identical contents per table, songplay_id included."""
    job_dir, ref_dir, _, _ = both_outputs
    diff = compare.differences(job_dir, ref_dir, table)
    assert compare.equal(diff), diff


def test_job_songplay_ids_unique(both_outputs):
    """songplay_id is a non-null unique key in the job's output."""
    ids = songplay_ids(both_outputs[0])
    assert None not in ids
    assert len(ids) == len(set(ids))
