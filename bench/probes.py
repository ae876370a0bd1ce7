"""Two focused timings behind the job's read and write choices (not part of run_bench.py).

    .venv/bin/python bench/probes.py song-read  bench/.cache/1M/input/song_data
    .venv/bin/python bench/probes.py songs-write OUTPUT_OF_A_JOB_RUN/songs

song-read: the song files through the line reader (`text`) and read whole (`binaryFile`,
split into lines), as etl.read_json_lines does, twice each (the first pass warms the JVM).
songs-write: rewrites a songs table partitioned by year, artist_id with the job's local
file system settings, under a few parquet writer settings, to show where the time goes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from pyspark.sql import SparkSession

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import etl

WRITE_VARIANTS = {
    "default": {},
    "no dictionary": {"parquet.enable.dictionary": "false"},
    "small pages and row groups": {"parquet.page.size": "65536", "parquet.block.size": "1048576"},
}


def timed(label: str, action) -> None:
    began = time.monotonic()
    result = action()
    print(f"{label:<40}{time.monotonic() - began:8.2f} s  {result if result is not None else ''}", flush=True)


def song_read(spark: SparkSession, root: str) -> None:
    for attempt in (1, 2):
        for small_files in (False, True):
            frame = etl.read_json_lines(spark, root, small_files=small_files)
            timed(f"pass {attempt} {'binaryFile' if small_files else 'text'}", frame.count)


def songs_write(spark: SparkSession, table: str) -> None:
    songs = spark.read.parquet(table).cache()
    songs.count()
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    with tempfile.TemporaryDirectory(prefix="probe-songs-") as scratch:
        for label, settings in [("warm-up", {}), *WRITE_VARIANTS.items()]:
            for key, value in settings.items():
                hadoop.set(key, value)
            target = f"{scratch}/{label}"
            timed(label, partial(etl.write_table, songs, target, etl.SONGS, songs.count()))
            for key in settings:
                hadoop.unset(key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=("song-read", "songs-write"))
    parser.add_argument("path", help="song_data folder (song-read) or a songs table (songs-write)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="probe-") as scratch:
        # The job's own session: same Spark properties, local file system and JVM options.
        settings = etl.Settings(
            config_path="", input_uri=args.path, output_uri=scratch, report_path=None, max_reject_rate=0.0, aws={}
        )
        spark = etl.create_spark_session(settings, os.path.join(scratch, "spark.log"))
        try:
            (song_read if args.probe == "song-read" else songs_write)(spark, args.path)
        finally:
            spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
