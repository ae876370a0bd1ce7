"""The Spark side of bench/s3_commit_paths.py --before-after: table writes over s3a://, one
phase at a time, so the caller can count each phase's S3 requests on its proxy.

    spark-submit [--master spark://...] bench/s3_commit_job.py s3a://bucket/prefix FILES HANDSHAKE_DIR

Before each phase it prints ``READY <phase>`` and waits for the file HANDSHAKE_DIR/<phase>
(the caller resets its counters, then creates it; spark-submit gives a Python application
no stdin), after it ``DONE <phase> <seconds>``. Phases, like the job's writes:
overwrite (a new partitioned parquet table), overwrite-again (a full run replacing it),
append (a daily run adding files), json (rejects, partitioned JSON), then ``fail``: a
partitioned write whose last task raises, which must leave no visible file and no pending
multipart upload. The S3A and commit properties come from spark-submit's properties file.
"""

from __future__ import annotations

import os
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

ROWS_PER_FILE = 5
WRITE_TASKS = 2


def frame(spark, files: int, offset: int = 0):
    """``files`` distinct (year, artist_id) pairs, like the songs table: one file each."""
    return (
        spark.range(offset, offset + files * ROWS_PER_FILE)
        .withColumn("pair", (F.col("id") - offset) % files)
        .withColumn("year", (F.col("pair") % 40 + 1970).cast("int"))
        .withColumn("artist_id", F.format_string("AR%08d", F.col("pair")))
        .withColumn("title", F.concat(F.lit("song "), F.col("id").cast("string")))
        .drop("pair")
        .repartition(WRITE_TASKS, "year", "artist_id")
    )


HANDSHAKE_TIMEOUT_S = 600


def phase(name: str, action) -> None:
    print(f"READY {name}", flush=True)
    go, deadline = os.path.join(sys.argv[3], name), time.monotonic() + HANDSHAKE_TIMEOUT_S
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit(f"no {go} within {HANDSHAKE_TIMEOUT_S} s")
        time.sleep(0.05)
    began = time.monotonic()
    error = ""
    try:
        action()
    except Exception as exc:  # the fail phase is meant to raise
        error = type(exc).__name__
    print(f"DONE {name} {time.monotonic() - began:.2f} {error}".rstrip(), flush=True)


FAIL_AFTER_S = 8


def explode(row_id: int, title: str, last: int) -> str:
    """Fails on one row only, after a wait: the other task commits meanwhile, and this one has
    written its other folders (the row is in the folder that sorts last)."""
    if row_id == last:
        time.sleep(FAIL_AFTER_S)
        raise RuntimeError("injected task failure")
    return title


def main() -> int:
    root, files = sys.argv[1].rstrip("/"), int(sys.argv[2])
    spark = SparkSession.builder.appName("s3-commit-job").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    table, rejects, failing = f"{root}/songs", f"{root}/_rejected", f"{root}/failing"
    first, second = frame(spark, files).cache(), frame(spark, files, 10**6).cache()
    first.count(), second.count()
    last = files * ROWS_PER_FILE - 1
    boom = F.udf(lambda row_id, title: explode(row_id, title, last), "string")
    # already in the writer's order, so no sort runs before the write and the failing row (of
    # the folder that sorts last) is reached after the task's other files were written
    doomed = first.sortWithinPartitions("year", "artist_id").withColumn("title", boom("id", "title"))

    def write(df, mode: str, path: str, fmt: str = "parquet"):
        return lambda: getattr(df.write.mode(mode).partitionBy("year", "artist_id"), fmt)(path)

    phase("overwrite", write(first, "overwrite", table))
    phase("overwrite-again", write(first, "overwrite", table))
    phase("append", write(second, "append", table))
    phase("json", write(first, "overwrite", rejects, "json"))
    phase("fail", write(doomed, "overwrite", failing))
    committer = spark.sparkContext._jsc.hadoopConfiguration().get("fs.s3a.committer.name")
    print(f"COMMITTER {committer} {spark.conf.get('spark.sql.sources.commitProtocolClass')}", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
