"""Parsing and validation: every line is used, rejected with a reason, or excluded."""

from __future__ import annotations

import json

import pytest
from records import EVENT as GOOD_EVENT
from records import SONG as GOOD_SONG

import etl


def changed(record: dict, **values) -> str:
    return json.dumps({**record, **values})


def without(record: dict, key: str) -> str:
    return json.dumps({name: value for name, value in record.items() if name != key})


# Text a valid record's strings may hold: none of it is a second record.
BRACES_IN_STRINGS = ["}{", "} {", "{", "}", '"}{"', "x}\t{y", "{}", '{"a": 1}{"b": 2}', "é}{漢 🎵", "\\}{\\"]


def glued(record: dict) -> list[str]:
    """The record with a second one (or text) after it on the same line: only the first would be read."""
    one, other = json.dumps(record), json.dumps({**record, "title": "}{", "song": "} {"})
    return [
        one + other,
        one + " " + other,
        one + "\t" + other,
        one + "  \t " + other,
        one + "," + other,
        one + ", " + other,
        one + "," + one,
        one + "]",
        one + "}",
        one + "]" + other,
        one + "}]" + other,
        one + " x}",
        one + '"text"',
        one + " 5",
        one + " []",
        one + " null",
    ]


def reasons(spark, validate, lines: list[str]) -> list:
    frame = spark.createDataFrame([(line, "file:/in/x.json") for line in lines], [etl.RAW, etl.SOURCE_FILE])
    return [row[etl.REASON] for row in validate(frame).collect()]


EVENT_CASES = [
    (json.dumps(GOOD_EVENT), None),
    (changed(GOOD_EVENT, userId=""), None),
    (changed(GOOD_EVENT, userId=42), None),  # a number where text is expected is still an id
    ('{"ts": 1542240000000, "userId": "7"', etl.MALFORMED_JSON),
    ("[1, 2, 3]", etl.MALFORMED_JSON),
    ("42", etl.MALFORMED_JSON),
    ("null", etl.MALFORMED_JSON),
    (json.dumps(GOOD_EVENT) + '{"ts": 15422', etl.MALFORMED_JSON),  # a lost newline, then a cut record
    (json.dumps(GOOD_EVENT) + json.dumps(GOOD_EVENT), etl.MALFORMED_JSON),  # two records on one line
    (json.dumps(GOOD_EVENT) + " trailing", etl.MALFORMED_JSON),
    (json.dumps(GOOD_EVENT) + "   ", None),
    *[(line, etl.MALFORMED_JSON) for line in glued(GOOD_EVENT)],
    *[(changed(GOOD_EVENT, song=text), None) for text in BRACES_IN_STRINGS],
    (changed(GOOD_EVENT, song="}{", artist="} {", location="{", userAgent="}"), None),
    (json.dumps(GOOD_EVENT, ensure_ascii=False) + "\t", None),
    (json.dumps({**GOOD_EVENT, "extra": {"a": [1, {"b": "}{"}], "c": {}}}), None),  # nested, not glued
    (json.dumps({**GOOD_EVENT, "extra": {"a": [1, {}]}}) + "{}", etl.MALFORMED_JSON),
    (changed(GOOD_EVENT, ts="1542240000000"), "wrong_type:ts"),
    (changed(GOOD_EVENT, ts=1.5e12), "wrong_type:ts"),
    (changed(GOOD_EVENT, sessionId="abc"), "wrong_type:sessionId"),
    (changed(GOOD_EVENT, length="long"), "wrong_type:length"),
    (without(GOOD_EVENT, "ts"), "missing_field:ts"),
    (changed(GOOD_EVENT, ts=None), "missing_field:ts"),
    (without(GOOD_EVENT, "userId"), "missing_field:userId"),
    (without(GOOD_EVENT, "page"), "missing_field:page"),
    ("{}", "missing_field:ts"),
    (changed(GOOD_EVENT, userId="abc"), etl.INVALID_USER_ID),
    (changed(GOOD_EVENT, userId="99999999999"), etl.INVALID_USER_ID),
    (changed(GOOD_EVENT, userId="-3"), etl.INVALID_USER_ID),
    (changed(GOOD_EVENT, ts=-1), etl.TS_OUT_OF_RANGE),
    (changed(GOOD_EVENT, ts=2**62), etl.TS_OUT_OF_RANGE),
]


@pytest.mark.parametrize(("line", "reason"), EVENT_CASES)
def test_event_validation(spark, line, reason):
    assert reasons(spark, etl.validate_events, [line]) == [reason]


SONG_CASES = [
    (json.dumps(GOOD_SONG), None),
    (changed(GOOD_SONG, year=None, duration=None), None),
    ("{not json", etl.MALFORMED_JSON),
    (without(GOOD_SONG, "song_id"), "missing_field:song_id"),
    (changed(GOOD_SONG, title=""), "missing_field:title"),
    (changed(GOOD_SONG, artist_id="  "), "missing_field:artist_id"),
    (changed(GOOD_SONG, duration="3:20"), "wrong_type:duration"),
    (changed(GOOD_SONG, year="1999"), "wrong_type:year"),
    *[(changed(GOOD_SONG, title=text), None) for text in BRACES_IN_STRINGS],
    (changed(GOOD_SONG, title="}{", artist_name="} {", artist_location="{", song_id="}"), None),
    (json.dumps({**GOOD_SONG, "title": "}{"}, ensure_ascii=False, indent=None, separators=(",", ":")), None),
    *[(line, etl.MALFORMED_JSON) for line in glued(GOOD_SONG)],
]


@pytest.mark.parametrize(("line", "reason"), SONG_CASES)
def test_song_validation(spark, line, reason):
    assert reasons(spark, etl.validate_songs, [line]) == [reason]


def test_every_event_gets_exactly_one_status_and_only_rejects_keep_their_file(spark):
    expected = {
        json.dumps(GOOD_EVENT): etl.CANDIDATE,
        changed(GOOD_EVENT, page="Home", song=None): etl.EXCLUDED_PREFIX + etl.NOT_A_SONG_PLAY,
        changed(GOOD_EVENT, userId="", page="NextSong"): etl.EXCLUDED_PREFIX + etl.LOGGED_OUT,
        changed(GOOD_EVENT, level="free"): etl.EXCLUDED_PREFIX + etl.DUPLICATE_EVENT,  # same play, later copy
        "garbage": etl.REJECTED_PREFIX + etl.MALFORMED_JSON,
    }
    frame = spark.createDataFrame(
        [(line, f"file:/in/{n}.json") for n, line in enumerate(expected)], [etl.RAW, etl.SOURCE_FILE]
    )
    classified = etl.classify_events(etl.validate_events(frame)).collect()
    parsed = [json.loads(line) if line.startswith("{") else {} for line in expected]
    identity = ("userId", "song", "level")  # what tells these events apart once classified
    assert {tuple(row[name] for name in identity): row[etl.STATUS] for row in classified} == {
        tuple(event.get(name) for name in identity): status for event, status in zip(parsed, expected.values())
    }
    kept = {row[etl.SOURCE_FILE] for row in classified if row[etl.SOURCE_FILE] is not None}
    assert kept == {f"file:/in/{len(expected) - 1}.json"}, "the source file is kept for the reject alone"
    assert not set(etl.UNREAD_EVENT_FIELDS) & set(classified[0].asDict()), "fields no table reads are dropped"


def test_the_declared_catalogue_schema_is_what_song_validation_gives(spark, tmp_path):
    """A daily run without new song files reads the catalogue with CATALOGUE_SCHEMA, built no song frame."""
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "one.json").write_text(json.dumps(GOOD_SONG))
    lines = etl.read_json_lines(spark, str(tmp_path), small_files=True)
    candidates = etl.candidates_only(etl.classify_songs(etl.validate_songs(lines)))
    declared = [(field.name, field.dataType) for field in etl.CATALOGUE_SCHEMA]
    assert [(field.name, field.dataType) for field in candidates.schema] == declared
    assert candidates.count() == 1


def test_rejects_keep_the_raw_line_and_its_file(spark):
    frame = spark.createDataFrame([("garbage", "file:/in/a.json")], [etl.RAW, etl.SOURCE_FILE])
    rejects = etl.rejected_only(etl.classify_events(etl.validate_events(frame))).collect()
    assert [tuple(row) for row in rejects] == [("garbage", "file:/in/a.json", etl.MALFORMED_JSON)]


def test_song_files_read_whole_split_into_the_same_lines_as_the_line_reader(spark, tmp_path):
    (tmp_path / "A" / "B").mkdir(parents=True)
    (tmp_path / "A" / "B" / "one.json").write_bytes(b'{"a": 1}')  # no final newline
    (tmp_path / "A" / "crlf.json").write_bytes(b'{"a": 2}\r\n{"a": 3}\r\n\r\n')
    (tmp_path / "mixed.json").write_bytes('{"a": 4}\r{"a": "é"}\n  \n{"a": 6}\n'.encode())
    (tmp_path / "notes.txt").write_bytes(b'{"a": 7}\n')  # not *.json: not input
    whole = etl.read_json_lines(spark, str(tmp_path), small_files=True).collect()
    assert sorted(whole) == sorted(etl.read_json_lines(spark, str(tmp_path)).collect())
    assert sorted(row[etl.RAW] for row in whole) == sorted([f'{{"a": {n}}}' for n in (1, 2, 3, 4, 6)] + ['{"a": "é"}'])
