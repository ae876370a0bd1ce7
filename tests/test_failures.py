"""Clear errors for user mistakes, and failed runs that leave the old tables exactly as they were."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from jobrun import TABLES, count_lines, run_job, tree_digest, write_config
from records import EVENT, SONG

import etl

pytestmark = pytest.mark.timeout(600)

EVENTS_PER_DAY = 40
# The dl.cfg many users already have: [AWS] with the two keys, quoted, no session token; the
# paths come from the command line. Dummy keys (local paths only), unique to spot any leak.
TEST_KEY_ID = "AKIATESTFAILURES0001"
TEST_SECRET = f"failures-secret-{uuid.uuid4().hex}"
MINIMAL_CONFIG = f"[AWS]\nAWS_ACCESS_KEY_ID = '{TEST_KEY_ID}'\nAWS_SECRET_ACCESS_KEY = \"{TEST_SECRET}\"\n"
BAD_EVENT_LINES = {
    "{not json": etl.MALFORMED_JSON,
    json.dumps({**EVENT, "ts": "yesterday"}): "wrong_type:ts",
    json.dumps({**EVENT, "userId": "bob"}): etl.INVALID_USER_ID,
}
BAD_SONG_LINES = {json.dumps({**SONG, "song_id": None}): "missing_field:song_id"}


def make_input(root: Path, bad_events: int = 0, bad_songs: int = 0) -> Path:
    """Two days of plays for three songs, with bad lines mixed in where asked."""
    for number in range(3):
        song = {**SONG, "song_id": f"SO{number}", "title": f"Song {number}", "artist_id": f"AR{number % 2}"}
        folder = root / "song_data" / "A" / "B" / str(number)
        folder.mkdir(parents=True)
        lines = [json.dumps(song)] + list(BAD_SONG_LINES)[: bad_songs if number == 0 else 0]
        (folder / f"TR{number}.json").write_text("\n".join(lines) + "\n")
    bad = list(BAD_EVENT_LINES) * bad_events
    for day in (1, 2):
        folder = root / "log_data" / "2018" / "11"
        folder.mkdir(parents=True, exist_ok=True)
        events = [
            json.dumps(
                {**EVENT, "ts": EVENT["ts"] + day * 86_400_000 + n * 1000, "itemInSession": n, "song": f"Song {n % 4}"}
            )
            for n in range(EVENTS_PER_DAY)
        ]
        events.append(events[0])  # a redelivered event
        events.append(json.dumps({**EVENT, "page": "Home", "ts": EVENT["ts"] + day}))
        events.append(json.dumps({**EVENT, "userId": "", "ts": EVENT["ts"] + day + 5}))
        (folder / f"2018-11-0{day}-events.json").write_text("\n".join(events + bad) + "\n")
    return root


def assert_clear_error(result, code: int, *phrases: str) -> None:
    """Exit code, at most two lines on stderr, no stack trace, and the words that name the problem."""
    assert result.code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, result.stderr  # nothing from Spark: its log goes to the run log
    assert lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    assert "\tat org.apache" not in result.output
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.fixture(scope="module")
def good_input(tmp_path_factory) -> Path:
    return make_input(tmp_path_factory.mktemp("good") / "in")


# --- user mistakes: exit 2, one line -------------------------------------------------------------


def test_missing_config_file(tmp_path):
    assert_clear_error(run_job("--config", str(tmp_path / "nope.cfg")), 2, "config file not found", "nope.cfg")


def test_config_that_is_not_ini(tmp_path):
    config = tmp_path / "dl.cfg"
    config.write_text("[AWS]\na line without an equals sign\n")
    assert_clear_error(run_job("--config", str(config)), 2, "not a valid INI file")


def test_config_without_a_section_header_names_the_first_line(tmp_path):
    """As some published solutions expect: bare keys. Refused, saying what the first line must be."""
    config = tmp_path / "dl.cfg"
    config.write_text(f"AWS_ACCESS_KEY_ID={TEST_KEY_ID}\nAWS_SECRET_ACCESS_KEY={TEST_SECRET}\n")
    result = run_job("--config", str(config), "--input", "in", "--output", "out")
    assert_clear_error(result, 2, "no section header", "its first line must be [AWS]")
    assert TEST_SECRET not in result.output and TEST_KEY_ID not in result.output


def test_config_missing_a_section(tmp_path):
    config = tmp_path / "dl.cfg"
    config.write_text("[AWS]\nAWS_ACCESS_KEY_ID=\nAWS_SECRET_ACCESS_KEY=\nAWS_SESSION_TOKEN=\n[SPARK]\n")
    assert_clear_error(run_job("--config", str(config)), 2, "[PATHS]")


def test_aws_section_alone_needs_every_path_as_a_flag(tmp_path):
    config = tmp_path / "dl.cfg"
    config.write_text(MINIMAL_CONFIG)
    result = run_job("--config", str(config), "--input", str(tmp_path / "in"))
    assert_clear_error(result, 2, "no [PATHS] section", "OUTPUT_DATA", "--output")
    assert TEST_SECRET not in result.output


def test_config_missing_a_key(tmp_path):
    config = write_config(tmp_path / "dl.cfg", "in", "out")
    config.write_text(config.read_text().replace("OUTPUT_DATA = out\n", ""))
    assert_clear_error(run_job("--config", str(config)), 2, "OUTPUT_DATA")


def test_unknown_flag():
    assert_clear_error(run_job("--outptu", "x"), 2, "unrecognized arguments", "--help")


def test_unknown_scheme(tmp_path):
    config = write_config(tmp_path / "dl.cfg", "gs://bucket/in", str(tmp_path / "out"))
    assert_clear_error(run_job("--config", str(config)), 2, "unsupported scheme gs://")


def test_output_inside_input(tmp_path, good_input):
    config = write_config(tmp_path / "dl.cfg", str(good_input), str(good_input / "tables"))
    assert_clear_error(run_job("--config", str(config)), 2, "inside the input")


def test_input_without_json_files(tmp_path):
    empty = tmp_path / "in"
    (empty / "song_data").mkdir(parents=True)
    (empty / "log_data").mkdir()
    (empty / "log_data" / "notes.txt").write_text("not an event file")
    config = write_config(tmp_path / "dl.cfg", str(empty), str(tmp_path / "out"))
    assert_clear_error(run_job("--config", str(config)), 2, "no JSON files under", "song_data")
    # a daily run into an output with committed runs: a mistyped input is an error, not "nothing new"
    runs = tmp_path / "out" / etl.STATE_DIR / etl.RUNS_DIR
    runs.mkdir(parents=True)
    (runs / "20181101T000000Z-abcdef.files.jsonl").write_text("")
    manifest = {"state_version": etl.STATE_VERSION, "files": "20181101T000000Z-abcdef.files.jsonl"}
    (runs / f"20181101T000000Z-abcdef{etl.MANIFEST_SUFFIX}").write_text(json.dumps(manifest))
    assert_clear_error(run_job("--config", str(config), "--incremental"), 2, "no JSON files under", "song_data")


def test_verbose_shows_the_stack(tmp_path):
    result = run_job("--config", str(tmp_path / "nope.cfg"), "--verbose")
    assert result.code == 2
    assert "Traceback" in result.stderr


# --- configurations users already have ------------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, good_input) -> tuple:
    """One successful run as many users start it: the minimal dl.cfg ([AWS] alone, quoted keys),
    the paths as flags, a TMPDIR of its own. The tests read what it printed, logged and wrote;
    the failing runs further down start from its output."""
    base = tmp_path_factory.mktemp("good-run")
    config = base / "minimal.cfg"
    config.write_text(MINIMAL_CONFIG)
    output, tmpdir = base / "out", base / "tmp"
    tmpdir.mkdir()
    result = run_job(
        "--config", str(config), "--input", str(good_input), "--output", str(output), env={"TMPDIR": str(tmpdir)}
    )
    assert result.code == 0, result.output
    return result, output, tmpdir


def test_minimal_config_with_quoted_keys_and_the_paths_as_flags(good_run, good_input):
    result, output, tmpdir = good_run
    assert result.stderr == ""
    assert "still holds whitespace or quotes" not in result.stdout  # the quotes were taken off
    assert all((output / table).is_dir() for table in TABLES)
    report = json.loads((output / etl.REPORT_NAME).read_text())
    assert report["tables"]["songplays"] == 2 * EVENTS_PER_DAY
    assert report["accounting"]["events"]["read"] == count_lines(good_input / "log_data")
    (run_log,) = (tmpdir / "sparkify-etl").glob("run-*.log")
    for secret in (TEST_SECRET, TEST_KEY_ID):
        assert secret not in result.output
        assert secret not in run_log.read_text()


# --- bad records: rejected with reasons, accounted for --------------------------------------------


def test_bad_records_are_rejected_counted_and_kept_aside(tmp_path, spark):
    data = make_input(tmp_path / "in", bad_events=1, bad_songs=1)
    config = write_config(tmp_path / "dl.cfg", str(data), str(tmp_path / "out"))
    result = run_job("--config", str(config), "--max-reject-rate", "0.5")
    assert result.code == 0, result.output
    report = json.loads((tmp_path / "out" / etl.REPORT_NAME).read_text())
    expected = {reason: 2 for reason in BAD_EVENT_LINES.values()}  # one of each per day
    assert report["rejected"]["events"] == {"total": 6, "by_reason": expected}
    assert report["rejected"]["songs"] == {"total": 1, "by_reason": {"missing_field:song_id": 1}}
    assert report["excluded"]["events"]["by_reason"] == {"duplicate_event": 2, "logged_out": 2, "not_a_song_play": 2}
    for dataset, folder in (("events", "log_data"), ("songs", "song_data")):
        books = report["accounting"][dataset]
        assert books["read"] == count_lines(data / folder)
        assert books["read"] == books["used"] + books["rejected"] + books["excluded"]
    rejects = spark.read.json(str(tmp_path / "out" / etl.REJECTED_DIR / "events")).collect()
    assert sorted((row.raw_record, row.reason) for row in rejects) == sorted(
        (line, reason) for line, reason in BAD_EVENT_LINES.items() for _ in (1, 2)
    )
    assert all(row.source_file.endswith("-events.json") for row in rejects)


# --- failed runs leave the previous output exactly as it was --------------------------------------


@pytest.fixture(scope="module")
def previous_output(good_run, good_input) -> tuple[Path, Path]:
    """The good run's output, whose every file is hashed before each failing run, and a dl.cfg
    that names it with the good input."""
    _, output, _ = good_run
    assert all((output / table).is_dir() for table in TABLES)
    return write_config(output.parent / "dl.cfg", str(good_input), str(output)), output


def assert_untouched_after(previous_output, *args: str, env: dict | None = None, code: int) -> None:
    config, output = previous_output
    before = tree_digest(output)
    result = run_job("--config", str(config), *args, env=env)
    assert result.code == code, result.output
    assert tree_digest(output) == before


def test_failed_run_missing_input_keeps_old_tables(previous_output, tmp_path):
    (tmp_path / "song_data").mkdir()
    assert_untouched_after(previous_output, "--input", str(tmp_path), code=2)


def test_failed_run_too_many_rejects_keeps_old_tables(previous_output, tmp_path):
    noisy = make_input(tmp_path / "noisy", bad_events=10)
    config, output = previous_output
    before = tree_digest(output)
    result = run_job("--config", str(config), "--input", str(noisy), "--max-reject-rate", "0.05")
    assert result.code == 3, result.output
    assert "above --max-reject-rate" in result.stderr and "no table was written" in result.stderr
    assert tree_digest(output) == before


def test_failed_run_config_error_keeps_old_tables(previous_output):
    assert_untouched_after(previous_output, "--input", "ftp://host/data", code=2)


@pytest.mark.parametrize("stage", ["extract", "transform"])
def test_crash_while_building_keeps_old_tables(previous_output, stage):
    config, output = previous_output
    before = tree_digest(output)
    result = run_job("--config", str(config), env={etl.FAULT_INJECTION_VARIABLE: stage})
    assert result.code == 1, result.output
    assert_clear_error(result, 1, "unexpected failure", "details:")
    log_path = result.stderr.split("details: ")[1].rstrip(")\n")
    assert "Traceback" in Path(log_path).read_text()
    assert tree_digest(output) == before


def test_s3_without_the_connector_says_how_to_get_it(tmp_path):
    config = write_config(tmp_path / "dl.cfg", "s3a://sparkify-bucket/in", str(tmp_path / "out"))
    assert_clear_error(run_job("--config", str(config)), 2, "S3A connector is missing", "README")


def test_successful_run_leaves_the_terminal_to_the_job(good_run):
    """Spark's warnings go to the run log, not to the terminal."""
    result, _, tmpdir = good_run
    assert result.stderr == ""
    (run_log,) = (tmpdir / "sparkify-etl").glob("run-*.log")
    assert " WARN spark NativeCodeLoader: " in run_log.read_text()  # pip's PySpark has no native Hadoop
    assert not list(tmpdir.glob("sparkify-etl-log4j2-*")), "the JVM's log configuration was left behind"
