"""Measure S3 requests per written file for ways of writing partitioned parquet over s3a://.

Why: S3 has no rename, so Hadoop's FileOutputCommitter turns every committed file into a
COPY + DELETE plus many HEAD/LIST probes; the songs table is ~12,600 tiny files. This runs
each candidate write path against a local moto S3 server behind a request-counting proxy
(tests/infra.py) and prints requests per written file by kind, plus seconds.

    .venv/bin/python bench/s3_commit_paths.py --files 200
    .venv/bin/python bench/s3_commit_paths.py --files 2000 --paths local-stage-upload,v1-tuned

Seconds include the Python proxy in the request path (use --no-proxy for wall time only).

    .venv/bin/python bench/s3_commit_paths.py --before-after            # -> bench/results/s3_commit_paths.json

--before-after runs bench/s3_commit_job.py with spark-submit, in local mode and on a
standalone cluster, once with today's configuration (Spark's default commit protocol over
S3A, etl.S3A_DEFAULTS) and once with the S3A magic committer (etl.S3A_COMMITTER), and
counts each phase's requests: overwrite, overwrite again, append, JSON, and a failing
write (after which no file may be visible and no multipart upload pending).
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
    SUBMIT_DEFAULTS,
    counting_proxy,
    java_home,
    s3a_jar_paths,
    s3a_spark_conf,
    spark_env,
    spark_home,
    start_s3_server,
    start_spark_cluster,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "s3_commit_paths.json"
JOB = REPO / "bench" / "s3_commit_job.py"
PHASE_TIMEOUT_S = 900

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


def before_after_configs() -> dict[str, dict[str, str]]:
    """Spark properties of each configuration: today's job (before) and with the committer."""
    import etl

    today = {f"spark.hadoop.{key}": value for key, value in etl.S3A_DEFAULTS.items()}
    return {"before": today, "after": {**today, **etl.S3A_COMMITTER}}


def data_files(client, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith((".parquet", ".json"))]


PHASE_PREFIX = {
    "overwrite": "songs/",
    "overwrite-again": "songs/",
    "append": "songs/",
    "json": "_rejected/",
    "fail": "failing/",
}


def run_job(server, proxy, master: str, label: str, props: dict[str, str], files: int) -> dict:
    """One spark-submit of s3_commit_job.py; the requests of each of its phases."""
    bucket = f"commit-{label}".lower()
    server.create_bucket(bucket)
    client = server.client()
    conf = {
        **SUBMIT_DEFAULTS,
        "spark.sql.shuffle.partitions": str(WRITE_TASKS),
        "spark.task.maxFailures": "1",
        **s3a_spark_conf(proxy.endpoint, s3a_jar_paths()),
        **props,
    }
    phases: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="commit-job-") as tmp:
        properties = Path(tmp) / "spark.properties"
        properties.write_text("".join(f"{k} {v}\n" for k, v in conf.items()))
        cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", master, "--properties-file", str(properties)]
        proc = subprocess.Popen(
            [*cmd, str(JOB), f"s3a://{bucket}/lake", str(files), tmp],
            env=spark_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=open(Path(tmp) / "stderr.log", "w"),  # noqa: SIM115 - closed with the process
            text=True,
            cwd=tmp,
        )
        committer = ""
        before: set[str] = set()
        for line in proc.stdout:
            if not line.split():
                continue
            word, *rest = line.split()
            if word == "READY":
                before = set(data_files(client, bucket, f"lake/{PHASE_PREFIX[rest[0]]}"))
                proxy.reset_counts()
                (Path(tmp) / rest[0]).touch()
            elif word == "DONE":
                name, seconds = rest[0], float(rest[1])
                counts = dict(sorted(proxy.bucket_counts(bucket).items()))
                after = set(data_files(client, bucket, f"lake/{PHASE_PREFIX[name]}"))
                written = len(after - before) if name == "append" else len(after)
                total = sum(counts.values())
                phases[name] = {
                    "seconds": seconds,
                    "files_written": written,
                    "requests": total,
                    "requests_per_file": round(total / written, 2) if written else None,
                    "copy_requests": counts.get("COPY", 0) + counts.get("COPY_PART", 0),
                    "by_kind": counts,
                }
                if name == "fail":
                    phases[name]["error"] = rest[2] if len(rest) > 2 else None
                    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/failing/")
                    left = [o["Key"] for page in pages for o in page.get("Contents", [])]
                    hidden = [k for k in left if any(part[:1] in "_." for part in k.split("/")[2:-1])]
                    phases[name]["objects_left_after_failure"] = len(left)
                    phases[name]["objects_left"] = left[:10]
                    phases[name]["visible_files_after_failure"] = len(set(after) - set(hidden))
                    phases[name]["data_files_uploaded_before_failure"] = counts.get("MPU_INIT", 0) + sum(
                        1 for k in left if k.endswith(".parquet")
                    )
                    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
                    phases[name]["pending_uploads_after_failure"] = len(uploads)
            elif word == "COMMITTER":
                committer = " ".join(rest)
        code = proc.wait(timeout=PHASE_TIMEOUT_S)
        if code != 0:
            raise RuntimeError(
                f"{label}: spark-submit exited {code}:\n{(Path(tmp) / 'stderr.log').read_text()[-3000:]}"
            )
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    success = client.get_object(Bucket=bucket, Key="lake/songs/_SUCCESS")["Body"].read()
    summary = {
        "committer": committer,
        "success_marker": json.loads(success).get("committer") if success else "empty (FileOutputCommitter)",
        "pending_uploads_at_end": len(uploads),
        "phases": phases,
    }
    written = sum(p["files_written"] for n, p in phases.items() if n != "fail")
    total = sum(p["requests"] for n, p in phases.items() if n != "fail")
    summary["requests_per_written_file"] = round(total / written, 2)
    summary["copy_requests"] = sum(p["copy_requests"] for n, p in phases.items() if n != "fail")
    return summary


def before_after(files: int, output: Path) -> dict:
    """Local and standalone cluster, before and after: the figures, also written to output."""
    results: dict = {"files_per_write": files, "configs": before_after_configs(), "runs": {}}
    with start_s3_server() as server, counting_proxy(server.endpoint) as proxy:
        for config, props in results["configs"].items():
            results["runs"][f"local-{config}"] = run_job(
                server, proxy, f"local[{WRITE_TASKS}]", f"local-{config}", props, files
            )
            print(f"local-{config}", json.dumps(results["runs"][f"local-{config}"]), flush=True)
        with start_spark_cluster() as master:
            for config, props in results["configs"].items():
                results["runs"][f"cluster-{config}"] = run_job(server, proxy, master, f"cluster-{config}", props, files)
                print(f"cluster-{config}", json.dumps(results["runs"][f"cluster-{config}"]), flush=True)
    rows = []
    for name, run in results["runs"].items():
        fail = run["phases"].get("fail", {})
        rows.append(
            f"{name:<16} req/file={run['requests_per_written_file']:<6} COPY={run['copy_requests']:<5} "
            + " ".join(f"{p}={v['requests_per_file']}" for p, v in run["phases"].items() if p != "fail")
            + f"  fail: visible={fail.get('visible_files_after_failure')}"
            + f" pending={fail.get('pending_uploads_after_failure')}"
        )
    results["table"] = rows
    output.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(rows))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-after", action="store_true", help="today's commit vs the committer -> --json")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file of --before-after")
    parser.add_argument("--files", type=int, default=DEFAULT_FILES)
    parser.add_argument("--paths", default=",".join(CANDIDATES), help="comma-separated")
    parser.add_argument("--threads", type=int, default=UPLOAD_THREADS)
    parser.add_argument("--no-proxy", action="store_true", help="time only, no counts")
    args = parser.parse_args(argv)
    if args.before_after:
        before_after(args.files, args.json)
        return 0
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
