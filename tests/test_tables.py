"""Each table rule of the issue, pinned on a few hand-made rows."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual
from records import EVENT, NOV_15, SONG

import etl

MINUTE = 60_000


def utc(*fields: int) -> datetime:
    """A naive datetime in UTC, as Spark hands timestamps back under a UTC session."""
    return datetime(*fields, tzinfo=timezone.utc).replace(tzinfo=None)


def event(**values) -> dict:
    """A NextSong event of user 7 with every field of the input schema."""
    return {**EVENT, "userAgent": "Mozilla/5.0", **values}


def song(**values) -> dict:
    return {**SONG, **values}


@pytest.fixture
def events_df(spark):
    def make(*rows: dict):
        return spark.createDataFrame([Row(**row) for row in rows], etl.EVENT_SCHEMA)

    return make


@pytest.fixture
def songs_df(spark):
    def make(*rows: dict):
        return spark.createDataFrame([Row(**row) for row in rows], etl.SONG_SCHEMA)

    return make


def as_read(records: DataFrame) -> DataFrame:
    """Parsed records as extract hands them on: valid (no reason), with their raw line and file."""
    for column in (etl.RAW, etl.REASON, etl.SOURCE_FILE):
        if column not in records.columns:
            records = records.withColumn(column, F.lit(None).cast(T.StringType()))
    return records


def plays(events: DataFrame) -> DataFrame:
    return etl.candidates_only(etl.classify_events(as_read(events)))


def catalogue(songs: DataFrame) -> DataFrame:
    return etl.candidates_only(etl.classify_songs(as_read(songs)))


def songplays(events, songs):
    """The table as a full run builds it (plan_full_run)."""
    return etl.build_songplays(plays(events), catalogue(songs))


def users(events):
    return etl.users_from_latest(etl.latest_user_events(etl.valid_only(etl.classify_events(as_read(events)))))


# --- songplays -------------------------------------------------------------------------


def test_songplays_keep_only_plays_of_logged_in_users(events_df, songs_df):
    events = events_df(
        event(ts=NOV_15),
        event(ts=NOV_15 + 1, page="Home"),
        event(ts=NOV_15 + 2, userId="", auth="Logged Out"),
    )
    result = songplays(events, songs_df(song()))
    assert [row.start_time for row in result.collect()] == [utc(2018, 11, 15)]


def test_songplays_count_a_redelivered_event_once(events_df, songs_df):
    twice = event(ts=NOV_15)
    other_item = event(ts=NOV_15, itemInSession=1)
    result = songplays(events_df(twice, twice, other_item), songs_df(song()))
    assert result.count() == 2


def test_redelivered_event_with_differing_fields_keeps_one_deterministic_copy(events_df, songs_df):
    paid, free = event(level="paid"), event(level="free")
    first = songplays(events_df(paid, free), songs_df(song())).collect()
    second = songplays(events_df(free, paid).repartition(2), songs_df(song())).collect()
    assert [row.level for row in first] == [row.level for row in second] == ["free"]


def test_redelivered_event_keeps_the_copy_of_the_first_file(spark, songs_df):
    """First delivered wins over the column order, so a daily run keeps what it published."""
    schema = T.StructType([*etl.EVENT_SCHEMA.fields, T.StructField(etl.SOURCE_FILE, T.StringType())])
    rows = [
        Row(**event(level="paid"), **{etl.SOURCE_FILE: "file:/in/2018-11-01-events.json"}),
        Row(**event(level="free"), **{etl.SOURCE_FILE: "file:/in/2018-11-02-events.json"}),
    ]
    result = songplays(spark.createDataFrame(rows, schema), songs_df(song())).collect()
    assert [row.level for row in result] == ["paid"]


def test_songplay_id_is_the_plays_identity_whatever_else_arrives(events_df, songs_df):
    rows = [event(ts=NOV_15 + offset, userId=str(user)) for offset in (0, 5, 9) for user in (3, 1, 2)]
    first = songplays(events_df(*rows), songs_df(song()))
    again = songplays(events_df(*reversed(rows)).repartition(3), songs_df(song()))
    ids = [row.songplay_id for row in first.orderBy("start_time", "user_id").collect()]
    assert len(set(ids)) == len(rows)
    assert ids == sorted(ids)  # zero-padded ts first: ids sort in time order
    assertDataFrameEqual(first, again)
    alone = songplays(events_df(rows[1]), songs_df(song())).first().songplay_id
    assert alone == f"{NOV_15:013d}-1-818-0"  # the same id with or without the other plays
    assert alone in ids


def test_songplay_id_is_the_documented_format_at_the_edges_of_valid_values(spark):
    """ts zero-padded to 13 digits, then user, session and item, as "%013d-%d-%d-%d" gives them."""
    values = [(0, 0, 0, 0), (1, 7, 1, 1), (etl.MAX_TS_MS, 2**31 - 1, 2**31 - 1, 2**31 - 1), (NOV_15, 12, -3, 0)]
    schema = "ts long, user_id int, sessionId int, itemInSession int"
    ids = [row[0] for row in spark.createDataFrame(values, schema).select(etl.songplay_id()).collect()]
    assert ids == [f"{ts:013d}-{user}-{session}-{item}" for ts, user, session, item in values]
    missing = spark.createDataFrame([(NOV_15, None, 1, 1)], schema).select(etl.songplay_id()).first()[0]
    assert missing is None  # never "…-null-…": a null part is reported by the not_null check


def test_songplay_columns_types_and_partition_fields(events_df, songs_df):
    result = songplays(events_df(event(userAgent='"Mozilla/5.0 (X11; "Linux")"')), songs_df(song()))
    assert result.dtypes == [
        ("songplay_id", "string"),
        ("start_time", "timestamp"),
        ("user_id", "int"),
        ("level", "string"),
        ("song_id", "string"),
        ("artist_id", "string"),
        ("session_id", "int"),
        ("location", "string"),
        ("user_agent", "string"),
        ("year", "int"),
        ("month", "int"),
    ]
    row = result.first()
    assert row.user_agent == 'Mozilla/5.0 (X11; "Linux")'  # only the surrounding quotes go
    assert (row.user_id, row.session_id, row.level, row.location) == (7, 818, "paid", "Chicago, IL")


def test_level_is_the_one_on_each_play(events_df, songs_df):
    events = events_df(event(ts=NOV_15, level="free"), event(ts=NOV_15 + MINUTE, itemInSession=1, level="paid"))
    result = songplays(events, songs_df(song())).orderBy("start_time")
    assert [row.level for row in result.collect()] == ["free", "paid"]


def test_time_fields_are_utc_at_a_month_edge(events_df, songs_df):
    december_first = 1543622400000  # 2018-12-01T00:00:00.000Z, still November in Los Angeles
    result = songplays(events_df(event(ts=december_first)), songs_df(song())).first()
    assert (result.start_time, result.year, result.month) == (utc(2018, 12, 1), 2018, 12)


def test_song_match_needs_title_and_artist_and_keeps_unmatched_plays(events_df, songs_df):
    events = events_df(
        event(ts=NOV_15),
        event(ts=NOV_15 + 1, artist="Someone Else"),
        event(ts=NOV_15 + 2, song="Unknown Song"),
    )
    result = songplays(events, songs_df(song())).orderBy("start_time")
    assert [(row.song_id, row.artist_id) for row in result.collect()] == [("SO1", "AR1"), (None, None), (None, None)]


def test_song_match_prefers_closest_duration_then_smallest_song_id(events_df, songs_df):
    catalogue = songs_df(
        song(song_id="SO9", artist_id="AR9", duration=250.0),
        song(song_id="SO5", artist_id="AR5", duration=190.0),
        song(song_id="SO3", artist_id="AR3", duration=210.0),
        song(song_id="SO4", artist_id="AR4", duration=None),
    )
    events = events_df(event(ts=NOV_15, length=200.0), event(ts=NOV_15 + 1, length=248.0))
    result = songplays(events, catalogue).orderBy("start_time")
    assert [row.song_id for row in result.collect()] == ["SO3", "SO9"]  # 190 and 210 tie: SO3 < SO5


def test_several_matching_songs_never_multiply_plays(events_df, songs_df):
    catalogue = songs_df(*[song(song_id=f"SO{n}", duration=200.0) for n in range(5)])
    result = songplays(events_df(event(ts=NOV_15), event(ts=NOV_15 + 1)), catalogue)
    assert result.count() == 2
    assert {row.song_id for row in result.collect()} == {"SO0"}


# --- users -------------------------------------------------------------------------------


def test_users_take_every_field_from_the_latest_event(events_df):
    events = events_df(
        event(ts=NOV_15, level="free", lastName="Old"),
        event(ts=NOV_15 + MINUTE, level="paid", lastName="New", page="Submit Upgrade"),
        event(ts=NOV_15 - MINUTE, level="free", lastName="Older"),
    )
    expected = [Row(user_id=7, first_name="Lily", last_name="New", gender="F", level="paid")]
    assertDataFrameEqual(users(events), expected)


def test_users_latest_event_ties_broken_by_session_then_item(events_df):
    events = events_df(
        event(ts=NOV_15, sessionId=1, itemInSession=9, level="free"),
        event(ts=NOV_15, sessionId=2, itemInSession=0, level="paid"),
        event(userId="8", ts=NOV_15, sessionId=5, itemInSession=1, level="free"),
        event(userId="8", ts=NOV_15, sessionId=5, itemInSession=2, level="paid"),
    )
    levels = {row.user_id: row.level for row in users(events).collect()}
    assert levels == {7: "paid", 8: "paid"}


def test_users_come_from_any_page_but_never_from_logged_out_events(events_df):
    events = events_df(event(page="Home", userId="12"), event(userId="", firstName=None, auth="Logged Out"))
    assert [row.user_id for row in users(events).collect()] == [12]


# --- songs and artists ----------------------------------------------------------------


def test_songs_one_row_per_song_id_from_the_first_file(spark):
    schema = T.StructType([*etl.SONG_SCHEMA.fields, T.StructField(etl.SOURCE_FILE, T.StringType())])
    rows = [
        Row(**song(title="Second copy"), **{etl.SOURCE_FILE: "file:/in/b.json"}),
        Row(**song(title="First copy"), **{etl.SOURCE_FILE: "file:/in/a.json"}),
    ]
    songs = catalogue(spark.createDataFrame(rows, schema))
    expected = [Row(song_id="SO1", title="First copy", artist_id="AR1", year=0, duration=200.0)]
    assertDataFrameEqual(etl.build_songs(songs), expected)


def test_songs_write_puts_each_folder_in_one_file_and_shares_the_folders_between_tasks(spark, tmp_path):
    """Year 0 holds whole careers (few folders, many rows), later years a song per folder:
    a split by rows gives one task the few big folders and the other all the rest."""
    careers, songs_each, years, artists = 4, 100, range(1950, 2010), 5
    rows = [(f"SO0{a}{n:03d}", "t", f"AR_OLD{a}", 0, 1.0) for a in range(careers) for n in range(songs_each)]
    rows += [(f"SO{year}{a}", "t", f"AR_NEW{a}", year, 1.0) for year in years for a in range(artists)]
    out = tmp_path / "songs"
    etl.write_table(spark.createDataFrame(rows, etl.TABLE_SCHEMAS[etl.SONGS]), str(out), name=etl.SONGS, rows=len(rows))
    files = list(out.glob("year=*/artist_id=*/part-*.parquet"))
    folders = {path.parent for path in files}
    assert len(folders) == careers + len(years) * artists
    assert len(files) == len(folders)  # one file per folder
    tasks = spark.sparkContext.defaultParallelism
    by_task = [sum(path.name.startswith(f"part-{task:05d}-") for path in files) for task in range(tasks)]
    assert sum(by_task) == len(files) and min(by_task) > 0 and max(by_task) / min(by_task) < 1.5, by_task
    assert spark.read.parquet(str(out)).count() == len(rows)


def test_artists_pick_the_most_complete_record_and_blank_becomes_null(songs_df):
    songs = songs_df(
        song(song_id="SO1", artist_name="Elena", artist_location=""),
        song(song_id="SO2", artist_name="Elena feat. X", artist_location="Dublin", artist_latitude=53.3),
        song(song_id="SO3", artist_name="Elena", artist_location="Cork", artist_latitude=51.9),
        song(song_id="SO4", artist_id="AR2", artist_name="  ", artist_location=""),
    )
    expected = [
        Row(artist_id="AR1", name="Elena feat. X", location="Dublin", latitude=53.3, longitude=None),
        Row(artist_id="AR2", name=None, location=None, latitude=None, longitude=None),
    ]
    assertDataFrameEqual(etl.build_artists(catalogue(songs)), expected)


# --- time --------------------------------------------------------------------------------


def test_time_has_one_row_per_distinct_start_time_with_iso_fields(events_df, songs_df):
    sunday_night = 1546214399000  # 2018-12-30T23:59:59Z: ISO week 52, weekday 7
    monday = 1546214400000  # 2018-12-31T00:00:00Z: ISO week 1 of 2019, weekday 1
    events = events_df(event(ts=sunday_night), event(ts=sunday_night, userId="8"), event(ts=monday))
    result = etl.build_time(songplays(events, songs_df(song())))
    expected = [
        Row(start_time=utc(2018, 12, 30, 23, 59, 59), hour=23, day=30, week=52, month=12, year=2018, weekday=7),
        Row(start_time=utc(2018, 12, 31), hour=0, day=31, week=1, month=12, year=2018, weekday=1),
    ]
    assertDataFrameEqual(result, expected)


# --- the contract -------------------------------------------------------------------------


def test_every_table_has_the_columns_and_types_of_its_contract(events_df, songs_df):
    events = events_df(event(ts=NOV_15), event(ts=NOV_15 + MINUTE, page="Home"))
    songs = etl.classify_songs(as_read(songs_df(song())))
    plan = etl.plan_full_run(songs, etl.classify_events(as_read(events)), "run", {})
    assert list(plan.frames) == list(etl.TABLE_NAMES)
    for name, table in plan.frames.items():
        contract = [(field.name, field.dataType) for field in etl.TABLE_SCHEMAS[name].fields]
        assert [(field.name, field.dataType) for field in table.schema.fields] == contract, name
        assert set(etl.PARTITION_COLUMNS[name]) <= {name for name, _ in contract}
