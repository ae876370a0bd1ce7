"""Tests of tools/generate_data.py: the synthetic input must look like the real data.

No Spark: the files are read back with the json module. Small datasets keep this fast.
"""

from __future__ import annotations

import calendar
import collections
import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import generate_data as gen  # noqa: E402
from conftest import shared_dataset  # noqa: E402

SAMPLE = REPO / "sample_data"
SAMPLE_COMMAND = (
    ".venv/bin/python tools/generate_data.py --songs 150 --events 3400 --seed 42 --layout s3 --out sample_data --force"
)
SONGS = 400
EVENTS = 20_000
SEED = 7
DUPLICATE_RATE = 0.01
START = dt.date(2018, 11, 1)
DAYS = 30

SONG_KEYS = [
    "num_songs",
    "artist_id",
    "artist_latitude",
    "artist_longitude",
    "artist_location",
    "artist_name",
    "song_id",
    "title",
    "duration",
    "year",
]
EVENT_KEYS = [
    "artist",
    "auth",
    "firstName",
    "gender",
    "itemInSession",
    "lastName",
    "length",
    "level",
    "location",
    "method",
    "page",
    "registration",
    "sessionId",
    "song",
    "status",
    "ts",
    "userAgent",
    "userId",
]
PERSONAL_KEYS = ("firstName", "gender", "lastName", "location", "registration", "userAgent")
REQUIRED_PAGES = set(gen.PAGE_HTTP)
NEXT_SONG_SHARE = (0.78, 0.87)  # the real month: 6,820 of 8,056
CATALOGUE_SHARE = (0.25, 0.42)  # about a third of the plays
MSD_CATALOGUE_SONGS = 20_000
MSD_SONGS_PER_ARTIST = 22  # the full MSD: 1M songs by 44,745 artists
MEAN_TOLERANCE = 0.15  # relative: ~900 artists at 20,000 songs
DUPLICATE_TOLERANCE = 0.35  # relative, ~5 sigma at 20,000 events and 1 %


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_logs(root: Path) -> tuple[list[str], list[dict]]:
    files = sorted((root / "log_data").rglob("*.json"))
    lines = [line for f in files for line in f.read_text(encoding="ascii").split("\n")]
    return lines, [json.loads(line) for line in lines]


def distinct(lines: list[str]) -> list[dict]:
    """The events without their duplicated deliveries."""
    return [json.loads(line) for line in dict.fromkeys(lines)]


def read_songs(root: Path) -> list[tuple[Path, str, dict]]:
    return [
        (path, line, json.loads(line))
        for path in sorted((root / "song_data").rglob("*.json"))
        for line in path.read_text(encoding="ascii").split("\n")
    ]


class Dataset(NamedTuple):
    root: Path
    summary: gen.Summary
    lines: list[str]
    events: list[dict]
    songs: list[tuple[Path, str, dict]]


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Dataset:
    """One flat dataset, read once, shared by the tests that only look at it."""
    out = tmp_path_factory.mktemp("flat") / "input"
    summary = gen.generate(out, songs=SONGS, events=EVENTS, seed=SEED, duplicate_rate=DUPLICATE_RATE)
    return Dataset(out, summary, *read_logs(out), read_songs(out))


def test_same_arguments_give_identical_bytes(tmp_path, flat):
    out = flat.root
    gen.generate(tmp_path / "again", songs=SONGS, events=EVENTS, seed=SEED, duplicate_rate=DUPLICATE_RATE)
    assert tree(tmp_path / "again") == tree(out)
    gen.generate(tmp_path / "other", songs=SONGS, events=EVENTS, seed=SEED + 1, duplicate_rate=DUPLICATE_RATE)
    assert tree(tmp_path / "other") != tree(out)


def test_flat_layout_paths(flat):
    out = flat.root
    expected = {f"{START + dt.timedelta(days=d)}-events.json" for d in range(DAYS)}
    assert {p.name for p in (out / "log_data").iterdir()} == expected
    assert {p.name for p in out.iterdir()} == {"song_data", "log_data"}


def test_song_paths_follow_the_track_id(flat):
    songs = flat.songs
    assert len(songs) == SONGS
    for path, _, _ in songs:  # song_data/<c3>/<c4>/<c5>/<TRACKID>.json
        track_id = path.stem
        assert len(track_id) == gen.ID_LENGTH and track_id.startswith("TR")
        assert path.parts[-5:-1] == ("song_data", *track_id[2:5])


def test_s3_layout_crosses_month_and_year(tmp_path):
    out = tmp_path / "s3"
    gen.generate(out, songs=20, events=300, seed=1, layout="s3", start="2018-12-30", days=3, songs_per_file=4)
    logs = sorted(p.relative_to(out).as_posix() for p in (out / "log_data").rglob("*.json"))
    assert logs == [
        "log_data/2018/12/2018-12-30-events.json",
        "log_data/2018/12/2018-12-31-events.json",
        "log_data/2019/01/2019-01-01-events.json",
    ]
    files = sorted((out / "song_data").rglob("*.json"))
    assert [len(f.read_text().split("\n")) for f in files] == [4] * 5  # --songs-per-file 4
    assert all(f.parts[-4:-1] == tuple(f.stem[2:5]) for f in files)


def test_serialisation_matches_the_real_files_byte_for_byte():
    """Keys, order, spacing and escapes of the real sample, re-serialised as the generator does."""
    real = shared_dataset("sample")
    song_file = min((real / "song_data").rglob("*.json"))
    song = json.loads(song_file.read_text())
    assert list(song) == SONG_KEYS and json.dumps(song) == song_file.read_text()
    for log_file in sorted((real / "log_data").glob("*.json"))[:3]:
        for line in log_file.read_text().split("\n"):
            event = json.loads(line)
            assert list(event) == EVENT_KEYS and gen._log_json(event) == line


def test_song_records_have_the_msd_shape(flat):
    for _, line, record in flat.songs:
        assert list(record) == SONG_KEYS
        assert line == json.dumps(record)  # spacing and \\u escapes as in the real files
        assert record["num_songs"] == 1
        for key in ("artist_id", "song_id"):
            assert len(record[key]) == gen.ID_LENGTH
        assert record["artist_id"].startswith("AR") and record["song_id"].startswith("SO")
        assert isinstance(record["artist_location"], str) and isinstance(record["artist_name"], str)
        assert isinstance(record["title"], str) and record["title"]
        assert isinstance(record["duration"], float) and record["duration"] > 0
        assert record["year"] == 0 or gen.YEAR_RANGE[0] <= record["year"] <= gen.YEAR_RANGE[1]
        coords = (record["artist_latitude"], record["artist_longitude"])
        assert coords == (None, None) or all(isinstance(c, float) for c in coords)


def test_song_catalogue_is_messy_like_the_msd(flat):
    records = [record for _, _, record in flat.songs]
    share = collections.Counter()
    for r in records:
        share["empty_location"] += r["artist_location"] == ""
        share["null_coords"] += r["artist_latitude"] is None
        share["year0"] += r["year"] == 0
        share["non_ascii_title"] += not r["title"].isascii()
    for key in ("empty_location", "null_coords", "year0"):
        assert 0.2 < share[key] / len(records) < 0.7, key
    assert share["non_ascii_title"] > 0
    by_artist = collections.defaultdict(list)
    for r in records:
        by_artist[r["artist_id"]].append(r)
    assert max(len(v) for v in by_artist.values()) >= 4  # several songs per artist
    assert any(len({r["artist_name"] for r in v}) > 1 for v in by_artist.values())
    assert any(len({r["artist_location"] for r in v}) > 1 for v in by_artist.values())


def test_songs_per_artist_sets_the_mean_like_the_full_msd():
    """--songs-per-artist 22: about 22 songs per artist (the whole MSD), still a long tail."""
    catalogue = gen.build_catalogue(MSD_CATALOGUE_SONGS, SEED, songs_per_artist=MSD_SONGS_PER_ARTIST)
    per_artist = collections.Counter(record["artist_id"] for _, record in catalogue)
    mean = len(catalogue) / len(per_artist)
    assert abs(mean - MSD_SONGS_PER_ARTIST) < MSD_SONGS_PER_ARTIST * MEAN_TOLERANCE
    assert min(per_artist.values()) == 1 and max(per_artist.values()) > 3 * MSD_SONGS_PER_ARTIST
    assert gen.build_catalogue(SONGS, SEED) == gen.build_catalogue(SONGS, SEED, songs_per_artist=None)


def test_some_songs_share_title_and_artist_with_other_durations():
    catalogue = gen.build_catalogue(2000, SEED)
    durations = collections.defaultdict(set)
    for _, r in catalogue:
        durations[(r["title"], r["artist_name"])].add(r["duration"])
    assert any(len(d) > 1 for d in durations.values())


def test_ids_are_unique(flat):
    records = [record for _, _, record in flat.songs]
    paths = [path.stem for path, _, _ in flat.songs]
    assert len(set(paths)) == len(paths)
    assert len({r["song_id"] for r in records}) == len(records)
    names_by_id = collections.defaultdict(collections.Counter)
    for r in records:
        names_by_id[r["artist_id"]][r["artist_name"]] += 1
    main_names = [names.most_common(1)[0][0] for names in names_by_id.values()]
    assert len(set(main_names)) == len(main_names)  # one id per artist


def test_event_records_have_the_eventsim_shape(flat):
    _, summary, lines, events, _ = flat
    start_ms = calendar.timegm(START.timetuple()) * 1000
    end_ms = start_ms + DAYS * gen.SECONDS_PER_DAY * 1000
    for line, e in zip(lines, events):
        assert list(e) == EVENT_KEYS
        assert line == gen._log_json(e)  # compact, \\/ and \\u escapes as in the real files
        assert e["auth"] in ("Logged In", "Logged Out") and e["level"] in ("free", "paid")
        assert isinstance(e["userId"], str) and isinstance(e["sessionId"], int)
        assert isinstance(e["itemInSession"], int) and isinstance(e["ts"], int)
        assert start_ms <= e["ts"] < end_ms
        assert (e["method"], e["status"]) == gen.PAGE_HTTP[e["page"]]
        if e["page"] == "NextSong":
            assert isinstance(e["artist"], str) and isinstance(e["song"], str)
            assert isinstance(e["length"], float)
        else:
            assert e["artist"] is None and e["song"] is None and e["length"] is None
        if e["auth"] == "Logged In":
            assert e["userId"] and isinstance(e["registration"], float) and e["gender"] in ("F", "M")
            assert all(isinstance(e[k], str) for k in PERSONAL_KEYS if k != "registration")
        else:
            assert e["userId"] == "" and all(e[k] is None for k in PERSONAL_KEYS)
    assert len(set(lines)) == summary.events == EVENTS


def test_each_day_file_is_sorted_and_holds_its_day(flat):
    out = flat.root
    for path in sorted((out / "log_data").glob("*.json")):
        day = dt.date.fromisoformat(path.name[:10])
        stamps = [e["ts"] for e in distinct(path.read_text().split("\n"))]
        assert stamps == sorted(stamps)  # a late duplicate may follow a later event
        assert {dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).date() for ts in stamps} == {day}


def test_page_mix(flat):
    events = flat.events
    pages = collections.Counter(e["page"] for e in events)
    assert set(pages) == REQUIRED_PAGES
    low, high = NEXT_SONG_SHARE
    assert low < pages["NextSong"] / len(events) < high
    assert pages["Home"] == max(n for page, n in pages.items() if page != "NextSong")


def test_logged_out_traffic_and_quoted_user_agents(flat):
    events = flat.events
    logged_out = [e for e in events if e["auth"] == "Logged Out"]
    assert logged_out and {e["page"] for e in logged_out} <= {"Home", "Login", "About", "Help"}
    agents = collections.Counter(e["userAgent"] for e in events if e["userAgent"])
    quoted = {a for a in agents if a.startswith('"') and a.endswith('"')}
    assert sum(agents[a] for a in quoted) > sum(agents.values()) / 2
    assert all(("," in a) == (a in quoted) for a in agents)  # Eventsim's CSV quoting


def test_sessions_count_items_from_zero_with_rising_time(flat):
    sessions = collections.defaultdict(list)
    for e in distinct(flat.lines):
        sessions[e["sessionId"]].append(e)
    for session in sessions.values():
        session.sort(key=lambda e: e["itemInSession"])
        assert [e["itemInSession"] for e in session] == list(range(len(session)))
        stamps = [e["ts"] for e in session]
        assert stamps == sorted(stamps)
        assert len({e["userId"] for e in session} - {""}) <= 1


def test_duplicates_are_identical_lines_at_the_requested_rate(flat):
    _, summary, lines, _, _ = flat
    copies = len(lines) - len(set(lines))
    assert copies == summary.duplicates
    assert abs(copies / EVENTS - DUPLICATE_RATE) < DUPLICATE_RATE * DUPLICATE_TOLERANCE
    seen = {}
    for index, line in enumerate(lines):
        if line in seen:
            assert index - seen[line] in (1, 2)  # right after, or one line later
        seen[line] = index


def test_level_changes_after_submit(flat):
    events = sorted(distinct(flat.lines), key=lambda e: (e["sessionId"], e["itemInSession"]))
    switched = collections.Counter()
    for before, after in zip(events, events[1:]):
        if before["sessionId"] == after["sessionId"] and before["page"] in ("Submit Upgrade", "Submit Downgrade"):
            expected = ("free", "paid") if before["page"] == "Submit Upgrade" else ("paid", "free")
            assert (before["level"], after["level"]) == expected
            switched[before["page"]] += 1
    assert switched["Submit Upgrade"] and switched["Submit Downgrade"]
    levels = collections.defaultdict(set)
    for e in events:
        if e["userId"]:
            levels[e["userId"]].add(e["level"])
    assert sum(len(v) == 2 for v in levels.values()) >= 2


def test_some_plays_match_the_catalogue_and_most_do_not(flat):
    _, summary, _, events, songs = flat
    durations = collections.defaultdict(set)
    for _, _, r in songs:
        durations[(r["title"], r["artist_name"])].add(r["duration"])
    plays = [e for e in events if e["page"] == "NextSong"]
    matched = [e for e in plays if (e["song"], e["artist"]) in durations]
    assert all(e["length"] in durations[(e["song"], e["artist"])] for e in matched)
    low, high = CATALOGUE_SHARE
    assert low < len(matched) / len(plays) < high
    assert summary.catalogue_plays <= len(matched) <= summary.catalogue_plays + summary.duplicates
    artists = {artist for _, artist in durations}
    titles = {title for title, _ in durations}
    unmatched = [e for e in plays if (e["song"], e["artist"]) not in durations]
    assert any(e["artist"] in artists for e in unmatched)  # known artist, unknown song
    assert any(e["song"] in titles for e in unmatched)  # a cover by someone else


def test_refuses_a_non_empty_folder_unless_forced(tmp_path, capsys):
    out = tmp_path / "input"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["--songs", "5", "--events", "50", "--seed", "1", "--out", str(out)]
    with pytest.raises(SystemExit):
        gen.main(args)
    assert gen.main([*args, "--force"]) == 0
    assert gen.main([*args, "--force", "--layout", "s3"]) == 0
    assert (out / "keep.txt").read_text() == "mine"
    assert not list((out / "log_data").glob("*.json"))  # the flat files were cleared
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("songs=5 song_files=5 ") and " events=50 " in summary


def test_committed_sample_is_what_the_documented_command_makes(tmp_path):
    assert SAMPLE_COMMAND in (SAMPLE / "README.md").read_text()
    args = shlex.split(SAMPLE_COMMAND)[2:]
    args[args.index("--out") + 1] = str(tmp_path / "sample")
    assert gen.main(args) == 0
    committed = {k: v for k, v in tree(SAMPLE).items() if k != "README.md"}
    assert committed and committed == tree(tmp_path / "sample")
