"""Quality checks: each check fails on a hand-made bad table and passes on a good one, the
[QUALITY] settings change the outcome, an error stops a real run before it publishes, a
warning is published and shown, and a daily run checks only its own rows.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest
from jobrun import run_job, run_settings, tree_digest, write_config
from records import EVENT, SONG
from test_failures import assert_clear_error, make_input

import etl

pytestmark = pytest.mark.timeout(900)

EVERY_CHECK = set(etl.QUALITY_CHECKS)
ERRORS = {name for name, severity in etl.QUALITY_CHECKS.items() if severity == etl.ERROR}


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=timezone.utc)


T1, T2 = utc(2018, 11, 15, 8, 30), utc(2018, 11, 15, 9, 0)
MONTH_EDGE = utc(2018, 12, 1)  # still November in Los Angeles: month 12 in UTC is right


def good_rows() -> dict[str, list[dict]]:
    """A small star schema every check passes on, with the edges that are valid (null gender,
    unknown song year, unknown artist location, unmatched play, a play at a month edge)."""

    def play(songplay_id, start_time, user_id, level, song_id):
        return {
            "songplay_id": songplay_id,
            "start_time": start_time,
            "user_id": user_id,
            "level": level,
            "song_id": song_id,
            "artist_id": "AR1" if song_id else None,
            "session_id": 818,
            "location": "Chicago, IL",
            "user_agent": "Mozilla/5.0",
            "year": start_time.year,
            "month": start_time.month,
        }

    def moment(start_time):
        return {
            "start_time": start_time,
            "hour": start_time.hour,
            "day": start_time.day,
            "week": start_time.isocalendar()[1],
            "month": start_time.month,
            "year": start_time.year,
            "weekday": start_time.isoweekday(),
        }

    times = (T1, T2, MONTH_EDGE)
    return {
        etl.SONGPLAYS: [
            play("1542270600000-7-818-0", T1, 7, "paid", "SO1"),
            play("1542272400000-8-819-0", T2, 8, "free", None),
            play("1543622400000-7-820-1", MONTH_EDGE, 7, "paid", "SO2"),
        ],
        etl.USERS: [
            {"user_id": 7, "first_name": "Lily", "last_name": "Koch", "gender": "F", "level": "paid"},
            {"user_id": 8, "first_name": "Sam", "last_name": "Lee", "gender": None, "level": "free"},
        ],
        etl.SONGS: [
            {"song_id": "SO1", "title": "Setanta matins", "artist_id": "AR1", "year": 0, "duration": 200.0},
            {"song_id": "SO2", "title": "Intro", "artist_id": "AR2", "year": 2005, "duration": 1.5},
        ],
        etl.ARTISTS: [
            {"artist_id": "AR1", "name": "Elena", "location": None, "latitude": None, "longitude": None},
            {"artist_id": "AR2", "name": "Kiss", "location": "NY", "latitude": -90.0, "longitude": 180.0},
        ],
        etl.TIME: [moment(start_time) for start_time in times],
    }


@pytest.fixture
def frames(spark):
    """DataFrames with the tables' own schemas from rows given as dicts."""

    def make(rows: dict[str, list[dict]]) -> dict:
        return {
            table: spark.createDataFrame(
                [tuple(row[column] for column in etl.TABLE_SCHEMAS[table].fieldNames()) for row in table_rows],
                etl.TABLE_SCHEMAS[table],
            )
            for table, table_rows in rows.items()
        }

    return make


def by_name(results: list[dict]) -> dict[str, dict]:
    return {result["name"]: result for result in results}


def failed(results: list[dict]) -> set[str]:
    return {result["name"] for result in results if result["status"] == etl.FAIL}


def test_the_catalogue_names_every_check_once_with_a_kind_and_a_severity(spark):
    rules = etl.row_rules(2024)
    keys = {f"{table}.{key}.{etl.UNIQUE}" for table, key in etl.PRIMARY_KEYS.items()}
    references = {f"{table}.{column}.{etl.REFERENCE_CHECK}" for table, column in etl.REFERENCES}
    comparisons = {f"{etl.SONGPLAYS}.song_id.{etl.MATCHED_SHARE}"} | {f"{t}.{etl.ROW_COUNT}" for t in etl.TABLE_NAMES}
    assert set(rules) | keys | references | comparisons == EVERY_CHECK
    assert len(rules) + len(keys) + len(references) + len(comparisons) == len(EVERY_CHECK)
    assert all(len(name) <= etl.MAX_SHOWN_KEY_LENGTH for name in EVERY_CHECK)  # a typo is warned about by name
    structural = ("unique", "not_null", "references", "partition")
    assert {name for name in EVERY_CHECK if etl.check_parts(name)[2] in structural} == ERRORS


def test_good_tables_pass_every_check(frames):
    results = etl.check_tables(frames(good_rows()), etl.QualitySettings())
    assert [result["name"] for result in results] == list(etl.QUALITY_CHECKS)  # every check, in catalogue order
    assert failed(results) == set()
    entry = by_name(results)["songplays.songplay_id.unique"]
    assert entry == {
        "name": "songplays.songplay_id.unique",
        "table": "songplays",
        "column": "songplay_id",
        "columns": ["songplay_id"],
        "check": "unique",
        "severity": "error",
        "status": "pass",
        "rows": 3,
        "failing": 0,
        "samples": [],
    }
    assert by_name(results)["songplays.start_time.partition"]["columns"] == ["start_time", "year", "month"]
    assert by_name(results)["users.row_count"]["column"] is None
    json.dumps(results)  # the report is JSON


# Each bad table: what is changed, the one check it breaks, how many rows break it, and a sample.
@dataclass(frozen=True)
class Change:
    """An edit of the good rows, and the tables it changes."""

    tables: tuple[str, ...]
    apply: Callable[[dict], None]


def duplicate(table: str, index: int = 0) -> Change:
    return Change((table,), lambda rows: rows[table].append(copy.deepcopy(rows[table][index])))


def edit(table: str, index: int, **values) -> Change:
    return Change((table,), lambda rows: rows[table][index].update(values))


def add(table: str, **values) -> Change:
    return Change((table,), lambda rows: rows[table].append({**copy.deepcopy(rows[table][0]), **values}))


def drop_time(index: int) -> Change:
    return Change((etl.TIME,), lambda rows: rows[etl.TIME].pop(index))


BAD_TABLES = [
    # errors: keys, references, partitions
    ("songplays.songplay_id.unique", duplicate(etl.SONGPLAYS), 2, {"songplay_id": "1542270600000-7-818-0"}),
    ("songplays.songplay_id.not_null", edit(etl.SONGPLAYS, 1, songplay_id=None), 1, {"songplay_id": None}),
    ("users.user_id.unique", add(etl.USERS, first_name="Other"), 2, {"user_id": 7}),
    ("users.user_id.not_null", add(etl.USERS, user_id=None), 1, {"user_id": None}),
    ("songs.song_id.unique", duplicate(etl.SONGS, 1), 2, {"song_id": "SO2"}),
    ("songs.song_id.not_null", add(etl.SONGS, song_id=None), 1, {"song_id": None}),
    ("artists.artist_id.unique", duplicate(etl.ARTISTS), 2, {"artist_id": "AR1"}),
    ("artists.artist_id.not_null", add(etl.ARTISTS, artist_id=None), 1, {"artist_id": None}),
    ("time.start_time.unique", duplicate(etl.TIME, 1), 2, {"start_time": "2018-11-15T09:00:00.000Z"}),
    ("time.start_time.not_null", add(etl.TIME, start_time=None, year=None, month=None), 1, {"start_time": None}),
    ("songplays.user_id.references", edit(etl.SONGPLAYS, 1, user_id=99), 1, {"user_id": 99}),
    ("songplays.user_id.references", edit(etl.SONGPLAYS, 1, user_id=None), 1, {"user_id": None}),
    ("songplays.start_time.references", drop_time(0), 1, {"start_time": "2018-11-15T08:30:00.000Z"}),
    ("songplays.start_time.partition", edit(etl.SONGPLAYS, 0, month=12), 1, {"month": 12, "year": 2018}),
    ("songplays.start_time.partition", edit(etl.SONGPLAYS, 2, month=11), 1, {"month": 11}),  # local, not UTC
    ("time.start_time.partition", edit(etl.TIME, 2, year=2019), 1, {"year": 2019}),
    # warnings: accepted values and ranges
    ("songplays.level.accepted_values", edit(etl.SONGPLAYS, 0, level="premium"), 1, {"level": "premium"}),
    ("users.level.accepted_values", edit(etl.USERS, 1, level=None), 1, {"user_id": 8, "level": None}),
    ("users.gender.accepted_values", edit(etl.USERS, 0, gender="X"), 1, {"gender": "X"}),
    ("songs.duration.range", edit(etl.SONGS, 0, duration=0.0), 1, {"song_id": "SO1", "duration": 0.0}),
    ("songs.duration.range", edit(etl.SONGS, 0, duration=-3.5), 1, {"duration": -3.5}),
    ("songs.year.range", edit(etl.SONGS, 1, year=1899), 1, {"year": 1899}),
    ("songs.year.range", edit(etl.SONGS, 1, year=datetime.now().year + 1), 1, {"song_id": "SO2"}),
    ("artists.latitude.range", edit(etl.ARTISTS, 1, latitude=90.5), 1, {"latitude": 90.5}),
    ("artists.longitude.range", edit(etl.ARTISTS, 1, longitude=-180.1), 1, {"longitude": -180.1}),
    ("time.hour.range", edit(etl.TIME, 0, hour=24), 1, {"hour": 24}),
    ("time.weekday.range", edit(etl.TIME, 0, weekday=0), 1, {"weekday": 0}),
]


def bad_table_sets(cases: list[tuple]) -> list[list[tuple]]:
    """The cases packed into as few table sets as can hold them apart: in one set no two cases
    involve the same table (the one they change or the one their check reads), so each
    breaks its check alone. One check_tables call per set instead of one per case."""
    sets: list[tuple[set, list]] = []
    for case in cases:
        involved = {etl.check_parts(case[0])[0], *case[1].tables}
        free = next((held for held in sets if not held[0] & involved), None)
        if free is None:
            free = (set(), [])
            sets.append(free)
        free[0].update(involved)
        free[1].append(case)
    return [held for _, held in sets]


BAD_TABLE_SETS = bad_table_sets(BAD_TABLES)


@pytest.mark.parametrize("cases", BAD_TABLE_SETS, ids=[f"set{n}" for n in range(len(BAD_TABLE_SETS))])
def test_each_check_fails_on_a_bad_table(frames, cases):
    rows = good_rows()
    for _, change, _, _ in cases:
        change.apply(rows)
    results = by_name(etl.check_tables(frames(rows), etl.QualitySettings()))
    assert failed(results.values()) == {check for check, *_ in cases}  # and no other check
    for check, _, failing, sample in cases:
        result = results[check]
        assert (result["status"], result["failing"], result["severity"]) == ("fail", failing, etl.QUALITY_CHECKS[check])
        assert any(sample.items() <= shown.items() for shown in result["samples"]), (check, result["samples"])
        assert 1 <= len(result["samples"]) <= etl.QUALITY_SAMPLES


def test_every_bad_table_is_checked_and_every_check_has_one():
    assert sorted(id(case) for held in BAD_TABLE_SETS for case in held) == sorted(map(id, BAD_TABLES))
    assert {case[0] for case in BAD_TABLES} == EVERY_CHECK - {
        name for name in EVERY_CHECK if etl.check_parts(name)[2] in (etl.ROW_COUNT, etl.MATCHED_SHARE)
    }


def test_samples_are_a_handful(frames):
    rows = good_rows()
    rows[etl.SONGS] += [{**rows[etl.SONGS][0], "song_id": f"SOZERO{n}", "duration": 0.0} for n in range(20)]
    result = by_name(etl.check_tables(frames(rows), etl.QualitySettings()))["songs.duration.range"]
    assert result["failing"] == 20 and len(result["samples"]) == etl.QUALITY_SAMPLES


# --- comparisons with the previous run ---------------------------------------------------------


def test_matched_share_is_compared_with_the_previous_run(frames):
    tables = frames(good_rows())  # 2 of 3 plays matched
    quality = etl.QualitySettings()
    steady = etl.Baseline(matched_share=(0.7, "run-1"))
    result = by_name(etl.check_tables(tables, quality, steady))["songplays.song_id.matched_share"]
    assert result["status"] == "pass" and result["value"] == pytest.approx(2 / 3)
    assert (result["previous"], result["previous_run"], result["margin"]) == (0.7, "run-1", 0.5)
    dropped = etl.Baseline(matched_share=(1.0, "run-1"))  # 2/3 < 1.0 x (1 - 0.25)
    strict = etl.QualitySettings(matched_share_margin=0.25)
    result = by_name(etl.check_tables(tables, strict, dropped))["songplays.song_id.matched_share"]
    assert (result["status"], result["failing"]) == ("fail", 1)


def test_row_counts_are_compared_with_the_previous_run(frames):
    tables = frames(good_rows())  # 3 plays, 2 users
    baseline = etl.Baseline(rows={etl.SONGPLAYS: (10, "run-1"), etl.USERS: (2, "run-1")})
    results = by_name(etl.check_tables(tables, etl.QualitySettings(), baseline))
    assert (results["songplays.row_count"]["status"], results["songplays.row_count"]["failing"]) == ("fail", 7)
    assert results["songplays.row_count"]["previous"] == 10
    assert results["users.row_count"]["status"] == "pass"
    assert results["songs.row_count"]["previous"] is None and results["songs.row_count"]["status"] == "pass"
    loose = etl.QualitySettings(row_count_margin=0.8)  # 7 of 10 is within 80 %
    assert by_name(etl.check_tables(tables, loose, baseline))["songplays.row_count"]["status"] == "pass"


# --- [QUALITY] decides severities and margins ------------------------------------------------


def quality_from(tmp_path: Path, text: str) -> etl.QualitySettings:
    config = tmp_path / "dl.cfg"
    config.write_text("[AWS]\n" + text)
    return etl.load_settings(etl.parse_args(["--config", str(config), "--input", "/in", "--output", "/out"])).quality


def test_quality_section_sets_severities_and_margins_in_any_case(tmp_path):
    quality = quality_from(
        tmp_path,
        "[quality]\nsongs.duration.range = ERROR\nSONGPLAYS.ROW_COUNT = off\n"
        "users.user_id.unique = 'warn'\nROW_COUNT_MARGIN = 0.2\nmatched_share_margin = 0.1\n",
    )
    assert quality.severities["songs.duration.range"] == etl.ERROR
    assert quality.severities["songplays.row_count"] == etl.OFF
    assert quality.severities["users.user_id.unique"] == etl.WARN
    assert quality.severities["songs.song_id.unique"] == etl.ERROR  # the default
    assert (quality.row_count_margin, quality.matched_share_margin) == (0.2, 0.1)
    assert quality_from(tmp_path, "").severities == etl.QUALITY_CHECKS


def test_checks_off_turns_every_check_off(tmp_path):
    quality = quality_from(tmp_path, "[QUALITY]\nCHECKS = off\nsongs.duration.range = error\n")
    assert set(quality.severities.values()) == {etl.OFF} and not quality.any_enabled


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("songs.duration.range = fatal", "songs.duration.range must be error, warn or off"),
        ("CHECKS = maybe", "CHECKS must be on or off"),
        ("ROW_COUNT_MARGIN = -1", "ROW_COUNT_MARGIN must be a number of 0 or more"),
        ("MATCHED_SHARE_MARGIN = lots", "MATCHED_SHARE_MARGIN must be a number from 0 to 1"),
        ("MATCHED_SHARE_MARGIN = 1.5", "MATCHED_SHARE_MARGIN must be a number from 0 to 1"),
    ],
)
def test_a_bad_quality_value_is_refused_by_name(tmp_path, text, named):
    with pytest.raises(etl.UserError, match=named.replace(".", r"\.")):
        quality_from(tmp_path, f"[QUALITY]\n{text}\n")


def test_a_misspelt_check_is_ignored_with_a_warning_that_names_the_check(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=etl.JOB_NAME):
        quality = quality_from(tmp_path, "[QUALITY]\nsongs.duration.rnage = off\n")
    assert quality.severities["songs.duration.range"] == etl.WARN
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "ignoring songs.duration.rnage in [QUALITY]" in warning and "did you mean songs.duration.range?" in warning


def test_severities_decide_what_stops_the_run(frames):
    rows = good_rows()
    rows[etl.SONGS][0]["duration"] = 0.0
    rows[etl.SONGPLAYS].append(copy.deepcopy(rows[etl.SONGPLAYS][0]))
    tables = frames(rows)
    default = etl.check_tables(tables, etl.QualitySettings())
    with pytest.raises(etl.QualityCheckError) as raised:
        etl.stop_on_failed_errors(default)
    assert str(raised.value).startswith("quality check songplays.songplay_id.unique failed: 2 of 4 rows")
    assert "nothing was published" in str(raised.value) and "\n" not in str(raised.value)

    swapped = {**etl.QUALITY_CHECKS, "songplays.songplay_id.unique": etl.WARN, "songs.duration.range": etl.ERROR}
    results = etl.check_tables(tables, etl.QualitySettings(severities=swapped))
    assert {(r["name"], r["severity"]) for r in results if r["status"] == etl.FAIL} == {
        ("songplays.songplay_id.unique", etl.WARN),
        ("songs.duration.range", etl.ERROR),
    }
    with pytest.raises(etl.QualityCheckError, match=r"quality check songs\.duration\.range failed: 1 of 2 rows"):
        etl.stop_on_failed_errors(results)

    off = {**etl.QUALITY_CHECKS, "songplays.songplay_id.unique": etl.OFF, "songs.duration.range": etl.OFF}
    results = etl.check_tables(tables, etl.QualitySettings(severities=off))
    assert failed(results) == set() and len(results) == len(EVERY_CHECK) - 2
    etl.stop_on_failed_errors(results)  # nothing to stop for


# --- a daily run's rows beside the published partitions ------------------------------------------


def test_new_rows_are_checked_against_the_published_partitions(frames):
    published = good_rows()
    new = {
        etl.SONGPLAYS: [{**published[etl.SONGPLAYS][1], "songplay_id": "1542272400000-8-819-1"}],  # at T2, as published
        etl.USERS: published[etl.USERS],  # rewritten whole
        etl.SONGS: [{**published[etl.SONGS][1], "song_id": "SO3"}],
        etl.TIME: [],  # T2 is already published
    }
    old = frames({name: published[name] for name in (etl.SONGPLAYS, etl.SONGS, etl.TIME)})
    results = etl.check_tables(frames(new), etl.QualitySettings(), published=old)
    assert failed(results) == set()
    assert by_name(results)["songplays.songplay_id.unique"]["rows"] == 1  # the new rows only
    assert {result["table"] for result in results} == {etl.SONGPLAYS, etl.USERS, etl.SONGS, etl.TIME}

    new[etl.SONGPLAYS].append(published[etl.SONGPLAYS][0])  # a play that is already published
    new[etl.SONGS].append(published[etl.SONGS][0])
    new[etl.TIME].append(published[etl.TIME][0])
    results = by_name(etl.check_tables(frames(new), etl.QualitySettings(), published=old))
    assert failed(results.values()) == {
        "songplays.songplay_id.unique",
        "songs.song_id.unique",
        "time.start_time.unique",
    }
    assert results["songplays.songplay_id.unique"]["failing"] == 1
    assert results["songplays.songplay_id.unique"]["samples"] == [
        {"songplay_id": "1542270600000-7-818-0", "rows": 1, "published": 1}
    ]

    del new[etl.TIME][:]
    new[etl.SONGPLAYS] = [{**published[etl.SONGPLAYS][1], "songplay_id": "x", "start_time": utc(2018, 11, 16)}]
    results = by_name(etl.check_tables(frames(new), etl.QualitySettings(), published=old))
    assert results["songplays.start_time.references"]["status"] == "fail"  # in neither new nor published time


def manifest(run_id: str, mode: str, rows: dict, actions: dict, quality: dict | None = None) -> dict:
    tables = {name: {"rows": rows.get(name, 0), "action": actions.get(name, etl.UNTOUCHED)} for name in etl.TABLE_NAMES}
    return {"run_id": run_id, "mode": mode, "tables": tables, **({"quality": quality} if quality else {})}


def test_the_baseline_compares_like_with_like():
    every = dict.fromkeys(etl.TABLE_NAMES, etl.REPLACED)
    daily = {**dict.fromkeys((etl.SONGPLAYS, etl.TIME), etl.APPENDED), etl.USERS: etl.REPLACED}
    sizes = {"songplays": 100, "users": 10, "songs": 50, "artists": 40, "time": 90}
    full = manifest(
        "r1",
        etl.FULL,
        sizes,
        every,
        {"table_sizes": sizes, "songplays_matched_in_table": 60, "songplays_matched_share": 0.6},
    )
    grown = {**sizes, "songplays": 130, "time": 115, "users": 11}
    day = manifest(
        "r2",
        etl.INCREMENTAL,
        {"songplays": 30, "time": 25, "users": 11},
        daily,
        {"table_sizes": grown, "songplays_matched_in_table": 69, "songplays_matched_share": 0.3},
    )
    empty_day = manifest(
        "r3",
        etl.INCREMENTAL,
        {"songplays": 0, "time": 0, "users": 11},
        daily,
        {"table_sizes": grown, "songplays_matched_in_table": 69, "songplays_matched_share": None},
    )

    # a full run: whole tables beside the tables as the last run left them
    baseline = etl.quality_baseline([empty_day], etl.FULL, every)
    assert baseline.rows == {name: (grown[name], "r3") for name in etl.TABLE_NAMES}
    assert baseline.matched_share == (69 / 130, "r3")
    # a daily run: appended rows beside the last daily run that appended some, whole tables beside their size
    baseline = etl.quality_baseline([full, day, empty_day], etl.INCREMENTAL, daily)
    assert baseline.rows == {"songplays": (30, "r2"), "time": (25, "r2"), "users": (11, "r3")}
    assert baseline.matched_share == (0.3, "r2")
    # the first daily run after a full run: no daily rows to compare with; the full run's share
    baseline = etl.quality_baseline([full], etl.INCREMENTAL, daily)
    assert baseline.rows == {"users": (10, "r1")} and baseline.matched_share == (0.6, "r1")
    # no earlier run, or one from before the checks existed
    assert etl.quality_baseline([], etl.FULL, every) == etl.Baseline()
    assert etl.quality_baseline([manifest("r0", etl.FULL, sizes, every)], etl.FULL, every) == etl.Baseline()


# --- the job as a user runs it ------------------------------------------------------------------


def input_with_a_silent_song(root: Path) -> Path:
    """The failure tests' input plus a valid song of length 0 (a quality problem, not a reject)."""
    make_input(root)
    folder = root / "song_data" / "Z" / "Z" / "Z"
    folder.mkdir(parents=True)
    silent = {**SONG, "song_id": "SOSILENT", "title": "4'33\"", "artist_id": "AR9", "duration": 0.0}
    (folder / "TRSILENT.json").write_text(json.dumps(silent) + "\n")
    return root


def test_a_warning_is_published_and_shown_and_an_error_keeps_the_old_tables(tmp_path, spark):
    data, output = input_with_a_silent_song(tmp_path / "in"), tmp_path / "out"
    config = write_config(tmp_path / "dl.cfg", str(data), str(output))
    result = run_job("--config", str(config), env={"TMPDIR": str(tmp_path)})
    assert result.code == 0, result.output
    assert result.stderr == ""
    assert "warn  songs.duration.range: 1 of 4 rows" in result.stdout and "SOSILENT" in result.stdout
    report = json.loads((output / etl.REPORT_NAME).read_text())
    assert "quality" in report["seconds"]
    (check,) = [entry for entry in report["quality"] if entry["status"] == etl.FAIL]
    assert {key: check[key] for key in ("name", "table", "column", "check", "severity", "failing", "rows")} == {
        "name": "songs.duration.range",
        "table": "songs",
        "column": "duration",
        "check": "range",
        "severity": "warn",
        "failing": 1,
        "rows": 4,
    }
    assert check["samples"] == [{"song_id": "SOSILENT", "duration": 0.0}]
    assert len(report["quality"]) == len(EVERY_CHECK)
    songs = spark.read.parquet(str(output / "songs")).filter("song_id = 'SOSILENT'").collect()
    assert len(songs) == 1  # nothing lost: the row breaking a warning is in the table

    # the same valid data, with that check made an error: exit 4, one line, every file as it was
    strict = write_config(
        tmp_path / "strict.cfg", str(data), str(output), extra="[QUALITY]\nsongs.duration.range = error\n"
    )
    before = tree_digest(output)
    result = run_job("--config", str(strict), env={"TMPDIR": str(tmp_path)})
    assert_clear_error(result, 4, "quality check songs.duration.range failed", "1 of 4 rows", "nothing was published")
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert tree_digest(output) == before


# --- a daily run checks its own rows, and compares with the previous run ------------------------


def day_plays(day: int, plays: int, matched: bool) -> list[str]:
    start = EVENT["ts"] + day * 86_400_000
    songs = [f"Song {n % 3}" if matched else "Not in the catalogue" for n in range(plays)]
    return [json.dumps({**EVENT, "ts": start + n * 1000, "itemInSession": n, "song": songs[n]}) for n in range(plays)]


def write_day(root: Path, day: int, plays: int, matched: bool) -> None:
    """A day file of user 7's plays (of SO0-SO2 or of no song) that also redelivers day 1's first play."""
    folder = root / "log_data" / "2018" / "11"
    folder.mkdir(parents=True, exist_ok=True)
    lines = day_plays(day, plays, matched) + day_plays(1, 1, True)
    (folder / f"2018-11-{15 + day:02d}-events.json").write_text("\n".join(lines) + "\n")


def daily_settings(source: Path, output: Path) -> etl.Settings:
    return run_settings(source, output, incremental=True)


def test_a_daily_run_checks_its_own_rows_against_the_previous_run(spark, tmp_path):
    source, output = tmp_path / "in", tmp_path / "out"
    make_input(tmp_path / "songs_only")
    shutil.copytree(tmp_path / "songs_only" / "song_data", source / "song_data")
    reports = []
    for day, plays, matched in ((1, 40, True), (2, 30, False), (3, 10, True)):
        write_day(source, day, plays, matched)
        reports.append(etl.run(spark, daily_settings(source, output)))
    first, second, third = ({entry["name"]: entry for entry in report["quality"]} for report in reports)

    assert [report["mode"] for report in reports] == [etl.FULL, etl.INCREMENTAL, etl.INCREMENTAL]
    assert first["songplays.songplay_id.unique"]["rows"] == 40
    assert reports[1]["excluded"]["events"]["by_reason"][etl.ALREADY_PUBLISHED] == 1  # and not a failed key
    # the day's rows only, and not the songs and artists it does not touch
    assert second["songplays.songplay_id.unique"]["rows"] == 30 and second["time.start_time.unique"]["rows"] == 30
    assert second["songplays.start_time.references"]["rows"] == 30
    assert second["users.user_id.unique"]["rows"] == 1  # users are rewritten whole
    assert {entry["table"] for entry in reports[1]["quality"]} == {etl.SONGPLAYS, etl.USERS, etl.TIME}
    assert {name for name, entry in second.items() if entry["status"] == etl.FAIL} == {
        "songplays.song_id.matched_share"
    }
    # matched share: day 2 matched nothing, beside the previous run (all 40 of day 1 matched)
    share = second["songplays.song_id.matched_share"]
    assert (share["value"], share["previous"], share["previous_run"]) == (0.0, 1.0, reports[0]["run_id"])
    assert third["songplays.song_id.matched_share"]["previous_run"] == reports[1]["run_id"]
    assert third["songplays.song_id.matched_share"]["status"] == etl.PASS
    # row counts: day 2 has no earlier daily run; day 3 writes 10 plays beside day 2's 30
    assert second["songplays.row_count"]["previous"] is None
    rows = third["songplays.row_count"]
    assert (rows["status"], rows["value"], rows["previous"], rows["previous_run"]) == (
        etl.FAIL,
        10,
        30,
        reports[1]["run_id"],
    )
    assert third["users.row_count"]["status"] == etl.PASS
    assert "warn  songplays.row_count: 10 against 30" in etl.summary_table(reports[2])
    state = json.loads((output / etl.STATE_DIR / etl.RUNS_DIR / f"{reports[2]['run_id']}.json").read_text())
    assert state["quality"]["table_sizes"][etl.SONGPLAYS] == 80
    assert state["quality"]["songplays_matched_in_table"] == 50
