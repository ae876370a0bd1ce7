"""Scale run: etl.py submitted to a standalone cluster of two workers (1 core, 1 GB each) on
4M events and a catalogue of 200k songs in multi-record files, with Spark's event log on.

    .venv/bin/python bench/run_scale.py          # writes bench/results/scale.json

It generates the input once (``bench/.cache/scale-4M/``, git-ignored), starts the cluster
from PySpark's own spark-class (tests/infra.py), runs ``spark-submit --master spark://...
etl.py --input --output --report`` (client mode, the job's default settings) while sampling
the peak RSS of the driver JVM and of each executor JVM, runs the DuckDB reference on the
same input, compares the five tables row for row (bench/compare_tables.py) and reads the
event log (bench/eventlog.py): each table's write stage with its task spread, the join
operators, every executor's peak memory. ``tests/test_scale.py`` runs the same ``measure``
and asserts on it; this command is how bench/results/scale.json is made.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import compare_tables as compare  # noqa: E402
import eventlog  # noqa: E402
import run_bench  # noqa: E402
from infra import spark_submit, start_spark_cluster  # noqa: E402

import etl  # noqa: E402

EVENTS = 4_000_000
SONGS = 200_000
SONGS_PER_FILE = 100
SEED = 42
DATASET_LABEL = "scale-4M"
WORKERS, CORES_PER_WORKER, MEMORY_PER_WORKER = 2, 1, "1g"
SUBMIT_TIMEOUT_S = 1800
SAMPLE_INTERVAL_S = 0.5  # every process on the machine is looked at: not too often
SKEW_LIMIT = 2.0  # the largest write task within 2x of the median one
SKEW_MEASURES = ("records_written", "shuffle_records_read", "shuffle_bytes_read")
SCALE_JSON = run_bench.RESULTS_DIR / "scale.json"
DRIVER_MAIN_CLASS = "org.apache.spark.deploy.SparkSubmit"
EXECUTOR_MAIN_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
COMMAND = ".venv/bin/python bench/run_scale.py"


def event_log_conf(directory: Path) -> dict[str, str]:
    """Spark properties that make the event log hold what bench/eventlog.py reads."""
    return {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": directory.resolve().as_uri(),
        # executor memory in the log: per stage and executor, RSS included
        "spark.eventLog.logStageExecutorMetrics": "true",
        "spark.executor.processTreeMetrics.enabled": "true",
    }


def local_file_system_conf() -> dict[str, str]:
    """The job's fork-free local file system (etl.no_fork_file_system) for the cluster's JVMs.

    This cluster writes to local disk, where Hadoop without its native library forks a
    `chmod` per file and folder: the songs table alone is 90k files at 200k songs, and the
    run would measure forks. On EMR the tables go to S3, which has no chmod; this puts the
    class the job compiles for local mode on the driver's and executors' class path (same
    machine). Empty (Hadoop's default) if it cannot be built.
    """
    classes = etl.no_fork_file_system()
    if classes is None:
        return {}
    return {
        etl.FILE_SYSTEM_IMPL: etl.NO_FORK_FILE_SYSTEM,
        etl.DRIVER_CLASS_PATH: classes,
        "spark.executor.extraClassPath": classes,
    }


def cluster_jvms(marker: str, cluster_dir: Path) -> dict[str, list[psutil.Process]]:
    """This run's driver JVM (its command line names our output) and executor JVMs (they
    run in our workers' folder), never another session's Spark processes."""
    roles: dict[str, list[psutil.Process]] = {"driver": [], "executors": []}
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] != run_bench.JVM_PROCESS_NAME:
                continue
            cmdline = proc.info["cmdline"] or []
            if DRIVER_MAIN_CLASS in cmdline and any(marker in arg for arg in cmdline):
                roles["driver"].append(proc)
            elif EXECUTOR_MAIN_CLASS in cmdline and Path(proc.cwd()).is_relative_to(cluster_dir):
                roles["executors"].append(proc)
        except psutil.Error:
            continue
    return roles


def run_on_cluster(data_dir: Path, work: Path) -> dict:
    """spark-submit etl.py to a fresh two-worker cluster; wall time, peak memory, report."""
    output, report, log_dir = work / "job", work / "job_report.json", work / "eventlog"
    cluster_dir = work / "cluster"
    log_dir.mkdir(parents=True)
    args = ["--input", str(data_dir), "--output", str(output), "--report", str(report)]
    with start_spark_cluster(cluster_dir, workers=WORKERS, cores=CORES_PER_WORKER, memory=MEMORY_PER_WORKER) as master:
        print(f"  job: spark-submit --master {master} etl.py {shlex.join(args)}", flush=True)
        with run_bench.PeakRss(lambda: cluster_jvms(str(output), cluster_dir), SAMPLE_INTERVAL_S) as peaks:
            began = time.perf_counter()
            proc = spark_submit(
                run_bench.ETL,
                *args,
                master=master,
                conf={**event_log_conf(log_dir), **local_file_system_conf()},
                timeout=SUBMIT_TIMEOUT_S,
                cwd=work,
                small_job=False,
            )
            wall = time.perf_counter() - began
        if proc.returncode != 0:
            raise RuntimeError(f"spark-submit failed ({proc.returncode}):\n{proc.stderr[-5000:]}\n{master.logs()}")
    executors = sorted(peaks.process_peaks_mb.get("executors", {}).values(), reverse=True)
    return {
        "wall_s": wall,
        "report": json.loads(report.read_text()),
        "driver_peak_rss_mb": peaks.peaks_mb.get("driver", 0.0),
        "executor_peak_rss_mb": executors,
        "load_avg_1m_max_during": max(peaks.load_samples, default=0.0),
        "output": output,
        "event_log": log_dir,
    }


def measure(work: Path) -> dict:
    """The whole scale run in ``work``; returns what bench/results/scale.json holds."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = os.getloadavg()[0]
    data_dir, generate_s = run_bench.ensure_dataset(
        DATASET_LABEL, SONGS, EVENTS, SEED, SONGS_PER_FILE, run_bench.MSD_SONGS_PER_ARTIST
    )
    files, size = run_bench.dir_size(data_dir)
    job = run_on_cluster(data_dir, work)
    reference = run_bench.run_reference(data_dir, work / "reference")
    tables = {table: compare.differences(job["output"], work / "reference", table) for table in run_bench.TABLES}
    analysis = eventlog.analyse(job["event_log"])
    writes = analysis["writes"]
    cores = WORKERS * CORES_PER_WORKER
    return {
        "command": COMMAND,
        "started_at": started,
        "machine": {"cpus": psutil.cpu_count(), "load_avg_1m_before": load_before},
        "cluster": {
            "kind": "Spark standalone from PySpark's spark-class, client deploy mode",
            "workers": WORKERS,
            "cores_per_worker": CORES_PER_WORKER,
            "memory_per_worker": MEMORY_PER_WORKER,
            "local_file_system": local_file_system_conf().get(etl.FILE_SYSTEM_IMPL, "Hadoop's default"),
        },
        "input": {
            "events": EVENTS,
            "songs": SONGS,
            "songs_per_file": SONGS_PER_FILE,
            "songs_per_artist": run_bench.MSD_SONGS_PER_ARTIST,
            "seed": SEED,
            "files": files,
            "mb": round(size / run_bench.MB, 1),
            "generate_s": generate_s,
        },
        "job": {
            "wall_s": round(job["wall_s"], 1),
            "seconds": job["report"]["seconds"],
            "tables": job["report"]["tables"],
            "events_per_core_second": round(EVENTS / (job["wall_s"] * cores)),
            "driver_peak_rss_mb": round(job["driver_peak_rss_mb"]),
            "executor_peak_rss_mb": [round(mb) for mb in job["executor_peak_rss_mb"]],
            "load_avg_1m_max_during": round(job["load_avg_1m_max_during"], 1),
        },
        "reference": {"wall_s": round(reference["wall_s"], 1), "seconds": reference["report"]["seconds"]},
        "ratio_job_over_reference": round(job["wall_s"] / reference["wall_s"], 2),
        "tables_equal_reference": {table: compare.equal(diff) for table, diff in tables.items()},
        "table_differences": tables,
        "skew_limit": SKEW_LIMIT,
        "write_skew": {
            table: {m: writes[table][m]["max_over_median"] for m in SKEW_MEASURES} if table in writes else None
            for table in run_bench.TABLES
        },
        "eventlog": analysis,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SCALE_JSON, help="where the results go (JSON)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sparkify-scale-") as work:
        result = measure(Path(work))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(eventlog.format_report(result["eventlog"]))
    print(json.dumps({k: result[k] for k in ("job", "reference", "ratio_job_over_reference", "write_skew")}, indent=2))
    print(f"tables equal the reference: {result['tables_equal_reference']}\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
