"""Property-based tests: whatever the input lines, the job never crashes and every line is
accounted for (read = used + rejected + excluded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from records import EVENT as GOOD_EVENT
from records import SONG as GOOD_SONG

import etl

pytestmark = pytest.mark.timeout(900)

# Text Spark can read back as UTF-8 lines: no surrogates, no line breaks inside a record.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)
HUGE_TEXT = st.text(alphabet="xé漢🎵", min_size=5_000, max_size=20_000)
JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False), TEXT
)
PAGES = st.sampled_from(["NextSong", "Home", "Logout", "NextSong", "", "nextsong"])
USER_IDS = st.one_of(st.sampled_from(["", "1", "2", "3", "0", "007"]), TEXT, st.integers(-5, 2**40))
TIMESTAMPS = st.one_of(
    st.integers(min_value=1_541_000_000_000, max_value=1_544_000_000_000),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # how Spark's text reader splits lines


@st.composite
def event_lines(draw) -> str:
    """A plausible event, then maybe mutated: a field dropped, retyped, or the line cut short."""
    record = {
        **GOOD_EVENT,
        "page": draw(PAGES),
        "userId": draw(USER_IDS),
        "ts": draw(TIMESTAMPS),
        "sessionId": draw(st.integers(0, 3)),
        "itemInSession": draw(st.integers(0, 3)),
        "song": draw(st.sampled_from(["Song A", "Song B"]) | TEXT),
        "artist": draw(st.sampled_from(["Elena"]) | TEXT),
        "length": draw(st.sampled_from([200.0, 180.5]) | JSON_VALUES),
        "userAgent": draw(st.sampled_from(['"Mozilla"', "curl"]) | TEXT | HUGE_TEXT),
    }
    mutation = draw(st.sampled_from(["none", "none", "drop", "retype", "truncate", "garbage"]))
    if mutation == "drop":
        record.pop(draw(st.sampled_from(sorted(record))))
    elif mutation == "retype":
        record[draw(st.sampled_from(sorted(record)))] = draw(JSON_VALUES | st.lists(st.integers(), max_size=2))
    line = json.dumps(record, ensure_ascii=draw(st.booleans()))
    if mutation == "truncate":
        line = line[: draw(st.integers(0, len(line) - 1))]
    if mutation == "garbage":
        line = draw(TEXT)
    return line


@st.composite
def song_lines(draw) -> str:
    record = {
        **GOOD_SONG,
        "song_id": draw(st.sampled_from(["SO1", "SO2", "SO3", ""]) | TEXT),
        "title": draw(st.sampled_from(["Song A", "Song B"]) | TEXT),
        "artist_id": draw(st.sampled_from(["AR1", "AR2"]) | TEXT),
        "duration": draw(st.sampled_from([200.0, 181.0]) | JSON_VALUES),
        "year": draw(st.sampled_from([0, 1999]) | JSON_VALUES),
    }
    if draw(st.booleans()):
        record.pop(draw(st.sampled_from(sorted(record))))
    line = json.dumps(record, ensure_ascii=draw(st.booleans()))
    return line[: draw(st.integers(1, len(line)))] if draw(st.integers(0, 4)) == 0 else line


def records_in(lines: list[str]) -> int:
    """Lines as the job counts them: Spark's line breaks, lines of only spaces are not records."""
    text = "\n".join(lines)
    return sum(1 for line in LINE_BREAK.split(text) if line.strip(" "))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines=st.lists(event_lines(), min_size=1, max_size=30))
def test_every_event_line_gets_exactly_one_known_status(spark, lines):
    frame = spark.createDataFrame([(line, "f.json") for line in lines], [etl.RAW, etl.SOURCE_FILE])
    statuses = [row[etl.STATUS] for row in etl.classify_events(etl.validate_events(frame)).collect()]
    assert len(statuses) == len(lines)
    for status in statuses:
        assert status == etl.CANDIDATE or status.startswith((etl.REJECTED_PREFIX, etl.EXCLUDED_PREFIX)), status


def write_lines(folder: Path, name: str, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(events=st.lists(event_lines(), min_size=1, max_size=25), songs=st.lists(song_lines(), min_size=1, max_size=6))
def test_whole_run_never_crashes_and_accounts_for_every_line(spark, tmp_path_factory, events, songs):
    root = tmp_path_factory.mktemp("property")
    write_lines(root / "in" / "log_data" / "2018" / "11", "2018-11-01-events.json", events)
    for number, line in enumerate(songs):
        write_lines(root / "in" / "song_data" / "A" / "B" / "C", f"TR{number}.json", [line])
    run_settings = etl.Settings(
        config_path=str(root / "dl.cfg"),
        input_uri=str(root / "in"),
        output_uri=str(root / "out"),
        report_path=None,
        max_reject_rate=1.0,
        aws=dict.fromkeys(etl.AWS_KEYS, ""),
    )
    report = etl.run(spark, run_settings)
    assert report["input"] == {"songs": records_in(songs), "events": records_in(events)}
    for dataset in etl.DATASETS:
        books = report["accounting"][dataset]
        assert books["read"] == books["used"] + books["rejected"] + books["excluded"]
        assert min(books.values()) >= 0
    assert report["tables"]["songplays"] == books["used"]
    assert report["tables"]["time"] <= report["tables"]["songplays"]
    assert report["songplays_matched"] <= report["tables"]["songplays"]
