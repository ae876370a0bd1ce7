"""Measure S3 requests per written file for ways of writing partitioned parquet over s3a://.

Why: S3 has no rename, so Hadoop's FileOutputCommitter turns every committed file into a
COPY + DELETE plus many HEAD/LIST probes; the songs table is ~12,600 tiny files. This runs
each candidate write path against a local moto S3 server behind a request-counting proxy
(tests/infra.py) and prints requests per written file by kind, plus seconds.

    .venv/bin/python bench/s3_commit_paths.py --files 200
    .venv/bin/python bench/s3_commit_paths.py --files 2000 --paths local-stage-upload,v1-tuned

Seconds include the Python proxy in the request path (use --no-proxy for wall time only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from infra import (
    LOCALHOST,
    counting_proxy,
    java_home,
    s3a_jar_paths,
    s3a_spark_conf,
    spark_home,
    start_s3_server,
)

DEFAULT_FILES = 200
ROWS_PER_FILE = 5
WRITE_TASKS = 2
UPLOAD_THREADS = 32
BUCKET_PREFIX = "bench-commit"
SUCCESS_MARKER = "_SUCCESS"

MARKERS_KEEP = {"fs.s3a.directory.marker.retention": "keep"}
# Probes and clean-up that a FileOutputCommitter job can do without (Spark writes no
# parquet summary files by default; set anyway so a cluster default cannot turn them on).
V1_TUNED = {
    **MARKERS_KEEP,
    "mapreduce.fileoutputcommitter.cleanup.skipped": "true",
    "parquet.summary.metadata.level": "NONE",
    "fs.s3a.threads.max": "64",
    "fs.s3a.connection.maximum": "96",
}

# name -> (hadoop/sql properties, mode). mode "direct" writes to s3a:// with Spark's own
# commit; "stage" writes to a local folder and uploads with parallel copyFromLocalFile
# calls from the driver; "stage-put" the same with one bare PUT per file.
CANDIDATES: dict[str, tuple[dict[str, str], str]] = {
    "default": ({}, "direct"),
    "v2": ({"mapreduce.fileoutputcommitter.algorithm.version": "2"}, "direct"),
    "v1-markers-keep": (MARKERS_KEEP, "direct"),
    "v1-tuned": (V1_TUNED, "direct"),
    "v2-tuned": ({**V1_TUNED, "mapreduce.fileoutputcommitter.algorithm.version": "2"}, "direct"),
    # S3A's staging committer bound directly as parquet's committer class (no
    # spark-hadoop-cloud): Spark instantiates non-FileOutputCommitter classes with a
    # no-argument constructor, which the S3A committers do not have.
    "staging-directory-committer": (
        {
            "spark.sql.parquet.output.committer.class": (
                "org.apache.hadoop.fs.s3a.commit.staging.DirectoryStagingCommitter"
            ),
            "fs.s3a.committer.name": "directory",
            "mapreduce.outputcommitter.factory.scheme.s3a": ("org.apache.hadoop.fs.s3a.commit.S3ACommitterFactory"),
        },
        "direct",
    ),
    # Only the factory binding: parquet still uses ParquetOutputCommitter (a
    # FileOutputCommitter), so this is expected to behave like the default.
    "factory-scheme-only": (
        {
            "fs.s3a.committer.name": "directory",
            "mapreduce.outputcommitter.factory.scheme.s3a": ("org.apache.hadoop.fs.s3a.commit.S3ACommitterFactory"),
        },
        "direct",
    ),
    "local-stage-upload": (MARKERS_KEEP, "stage"),
    "local-stage-put": (MARKERS_KEEP, "stage-put"),
}


def build_session(endpoint: str):
    """A local[2] session with S3A pointed at ``endpoint``."""
    import os

    from pyspark.sql import SparkSession

    home = java_home()
    if home:
        os.environ["JAVA_HOME"] = home
    os.environ["SPARK_HOME"] = str(spark_home())
    os.environ["SPARK_LOCAL_IP"] = LOCALHOST
    builder = (
        SparkSession.builder.master(f"local[{WRITE_TASKS}]")
        .appName("s3-commit-paths")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", LOCALHOST)
        .config("spark.sql.shuffle.partitions", str(WRITE_TASKS))
    )
    for key, value in s3a_spark_conf(endpoint, s3a_jar_paths()).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def partitioned_frame(spark, files: int):
    """``files`` distinct (year, artist_id) pairs, like the songs table: one file each."""
    from pyspark.sql import functions as F

    rows = files * ROWS_PER_FILE
    return (
        spark.range(rows)
        .withColumn("pair", F.col("id") % files)
        .withColumn("year", (F.col("pair") % 40 + 1970).cast("int"))
        .withColumn("artist_id", F.format_string("AR%08d", F.col("pair")))
        .withColumn("title", F.concat(F.lit("song "), F.col("id").cast("string")))
        .drop("pair")
        .repartition(WRITE_TASKS, "year", "artist_id")
    )


def apply_properties(spark, props: dict[str, str]) -> dict[str, str | None]:
    """Set properties for the next write, returning the previous values, and drop cached
    FileSystems (they keep the configuration they were created with)."""
    jvm = spark.sparkContext._jvm
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    previous = {key: hconf.get(key) for key in props}
    for key, value in props.items():
        spark.conf.set(key, value)
        hconf.set(key, value)
    jvm.org.apache.hadoop.fs.FileSystem.closeAll()
    return previous


def restore_properties(spark, previous: dict[str, str | None]) -> None:
    """Undo ``apply_properties``. Restoring matters: unsetting a key Spark had set (e.g. the
    commit algorithm version) falls back to Hadoop's own default, which differs."""
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in previous.items():
        spark.conf.unset(key)
        if value is None:
            hconf.unset(key)
        else:
            hconf.set(key, value)


def upload_tree_via_hadoop(spark, local_dir: Path, dest: str, threads: int, direct_put: bool = False) -> int:
    """Upload a finished local table to ``dest`` with parallel single PUTs through the
    JVM's Hadoop FileSystem (same credentials/endpoint as Spark); ``_SUCCESS`` goes last,
    so a reader that checks it never sees a half-uploaded table. Returns files uploaded.

    ``direct_put``: S3A only, one PUT per file through S3A's WriteOperationHelper instead
    of ``copyFromLocalFile`` (which probes the destination first: HEAD + LIST)."""
    jvm = spark.sparkContext._jvm
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    dest_path = jvm.org.apache.hadoop.fs.Path(dest)
    fs = dest_path.getFileSystem(hconf)
    files = sorted(
        p for p in local_dir.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != SUCCESS_MARKER
    )

    helper = fs.getWriteOperationHelper() if direct_put else None

    def put(path: Path) -> None:
        target = jvm.org.apache.hadoop.fs.Path(f"{dest.rstrip('/')}/{path.relative_to(local_dir)}")
        if helper is not None:
            key = fs.pathToKey(target)
            helper.putObject(helper.createPutObjectRequest(key, jvm.java.io.File(str(path))))
        else:
            fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(str(path)), target)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(put, files):
            pass
    marker = local_dir / SUCCESS_MARKER
    if marker.exists():
        put(marker)
        return len(files) + 1
    return len(files)


def count_data_files(client, bucket: str, prefix: str) -> int:
    """Parquet files under ``prefix`` (what readers will see)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sum(1 for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".parquet"))


def run_candidate(spark, server, proxy, name: str, files: int, threads: int) -> dict:
    """One write of ``files`` partition files with candidate ``name``; returns measurements."""
    props, mode = CANDIDATES[name]
    bucket = f"{BUCKET_PREFIX}-{name}".lower()[:63]
    server.create_bucket(bucket)
    df = partitioned_frame(spark, files)
    df.cache().count()  # build the data before counting requests
    dest = f"s3a://{bucket}/songs"
    previous = apply_properties(spark, props)
    result: dict = {"name": name, "error": None}
    if proxy is not None:
        proxy.reset_counts()
    start = time.monotonic()
    try:
        if mode == "direct":
            df.write.mode("overwrite").partitionBy("year", "artist_id").parquet(dest)
        else:
            with tempfile.TemporaryDirectory(prefix="stage-") as tmp:
                local = Path(tmp) / "songs"
                df.write.mode("overwrite").partitionBy("year", "artist_id").parquet(local.as_uri())
                result["stage_s"] = round(time.monotonic() - start, 1)
                upload_tree_via_hadoop(spark, local, dest, threads, mode == "stage-put")
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        traceback.print_exc(limit=2, file=sys.stderr)
    result["seconds"] = round(time.monotonic() - start, 1)
    result["counts"] = proxy.snapshot() if proxy is not None else {}
    restore_properties(spark, previous)
    df.unpersist()
    result["files"] = count_data_files(server.client(), bucket, "songs/")
    return result


def report(result: dict) -> str:
    """One line: requests per written file, total and by kind."""
    files = result["files"] or 1
    counts = Counter(result["counts"])
    total = sum(counts.values())
    kinds = " ".join(f"{k}={v / files:.2f}" for k, v in sorted(counts.items()))
    line = (
        f"{result['name']:<28} files={result['files']:<6} s={result['seconds']:<7} "
        f"req/file={total / files:.2f}  {kinds}"
    )
    if "stage_s" in result:
        line += f"  (local write {result['stage_s']} s)"
    if result["error"]:
        line += f"\n{'':<28} FAILED {result['error']}"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=DEFAULT_FILES)
    parser.add_argument("--paths", default=",".join(CANDIDATES), help="comma-separated")
    parser.add_argument("--threads", type=int, default=UPLOAD_THREADS)
    parser.add_argument("--no-proxy", action="store_true", help="time only, no counts")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown paths {unknown}; known: {', '.join(CANDIDATES)}")
    with start_s3_server() as server:
        if args.no_proxy:
            proxy = None
            spark = build_session(server.endpoint)
            results = [run_candidate(spark, server, None, n, args.files, args.threads) for n in names]
        else:
            with counting_proxy(server.endpoint) as proxy:
                spark = build_session(proxy.endpoint)
                results = [run_candidate(spark, server, proxy, n, args.files, args.threads) for n in names]
        spark.stop()
    print(f"# {args.files} partition files, {WRITE_TASKS} write tasks, local moto S3")
    for result in results:
        print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
