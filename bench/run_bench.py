"""Benchmark the Spark job against the DuckDB reference on generated data of growing size.

Run from the repository root::

    .venv/bin/python bench/run_bench.py --sizes 100k,1M,4M

For each size it generates (once, cached in ``bench/.cache/<size>/``) a dataset with
``tools/generate_data.py`` in the S3 layout, runs ``etl.py`` exactly as a user would
(``--input/--output/--report``, default ``[SPARK]`` settings), samples the driver JVM's peak
RSS, reads the job's JSON report, counts the parquet part files per table, then times
``bench/duckdb_reference.py`` on the same input. Results go to ``bench/results/results.json``
and ``bench/results/seconds_vs_size.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_JSON = RESULTS_DIR / "results.json"
CHART_PNG = RESULTS_DIR / "seconds_vs_size.png"
ETL = REPO / "etl.py"
GENERATOR = REPO / "tools" / "generate_data.py"
REFERENCE = BENCH_DIR / "duckdb_reference.py"
PYTHON = sys.executable

DEFAULT_SIZES = "100k,1M,4M"
DEFAULT_SONGS = 10_000
DEFAULT_SEED = 42
DEFAULT_REPEAT = 1
GENERATOR_LAYOUT = "s3"
CACHE_MANIFEST = "cache.json"
SIZE_SUFFIXES = {"k": 1_000, "m": 1_000_000}
SAMPLE_INTERVAL_S = 0.2
MB = 1024 * 1024
JVM_PROCESS_NAME = "java"
PART_FILE_SUFFIX = ".parquet"
TABLES = ("songplays", "users", "songs", "artists", "time")
HASH_CHUNK = 1 << 20


def parse_size(text: str) -> int:
    """'100k' -> 100000, '4M' -> 4000000, '2500' -> 2500."""
    text = text.strip()
    factor = SIZE_SUFFIXES.get(text[-1:].lower(), 1)
    number = text[:-1] if factor != 1 else text
    return int(float(number) * factor)


def file_sha256(path: Path) -> str:
    """Content hash, so that a changed generator invalidates the cached datasets."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def generator_args(songs: int, events: int, seed: int, out: Path) -> list[str]:
    """The generator's CLI arguments (the cache key is made of the same values)."""
    return [
        "--songs",
        str(songs),
        "--events",
        str(events),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--layout",
        GENERATOR_LAYOUT,
    ]


def ensure_dataset(label: str, songs: int, events: int, seed: int) -> tuple[Path, float | None]:
    """Return (input dir, generation seconds or None when reused from the cache)."""
    if not GENERATOR.exists():
        raise SystemExit(f"generator not found: {GENERATOR}")
    base = CACHE_DIR / label
    data_dir = base / "input"
    key = {
        "songs": songs,
        "events": events,
        "seed": seed,
        "layout": GENERATOR_LAYOUT,
        "generator_sha256": file_sha256(GENERATOR),
    }
    manifest = base / CACHE_MANIFEST
    if manifest.exists() and json.loads(manifest.read_text()).get("key") == key:
        return data_dir, None
    if data_dir.exists():
        shutil.rmtree(data_dir)
    manifest.unlink(missing_ok=True)
    base.mkdir(parents=True, exist_ok=True)
    cmd = [PYTHON, str(GENERATOR), *generator_args(songs, events, seed, data_dir)]
    print(f"  generating: {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    # Written last: an interrupted generation is never mistaken for a complete one.
    manifest.write_text(json.dumps({"key": key, "seconds": seconds}, indent=2))
    return data_dir, seconds


def dir_size(path: Path) -> tuple[int, int]:
    """(number of files, bytes) below ``path``."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _rss_of(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def _name_of(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def run_monitored(cmd: list[str], log_path: Path) -> dict:
    """Run ``cmd`` from the repo root, sampling the peak RSS of it and of its JVM child.

    The JVM is the ``java`` descendant spawned by PySpark's launcher: that is the driver
    whose heap the job sizes, so it is reported on its own.
    """
    peak_jvm = peak_tree = 0
    start = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            jvm = sum(_rss_of(c) for c in children if _name_of(c) == JVM_PROCESS_NAME)
            tree = _rss_of(root) + sum(_rss_of(c) for c in children)
            peak_jvm, peak_tree = max(peak_jvm, jvm), max(peak_tree, tree)
            time.sleep(SAMPLE_INTERVAL_S)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return {
        "wall_s": wall,
        "peak_jvm_mb": peak_jvm / MB,
        "peak_tree_mb": peak_tree / MB,
    }


def table_files(output_dir: Path) -> dict[str, dict]:
    """Parquet part files per table: count and MB (what S3 requests and storage see)."""
    result = {}
    for table in TABLES:
        parts = [p for p in (output_dir / table).rglob(f"*{PART_FILE_SUFFIX}") if p.is_file()]
        size = sum(p.stat().st_size for p in parts)
        result[table] = {"files": len(parts), "mb": size / MB}
    return result


def run_job(data_dir: Path, out_dir: Path, job_args: list[str]) -> dict:
    """One run of etl.py as a user would launch it; returns timings, report, file counts."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    report_path = out_dir.parent / "job_report.json"
    report_path.unlink(missing_ok=True)
    cmd = [
        PYTHON,
        str(ETL),
        "--input",
        str(data_dir),
        "--output",
        str(out_dir),
        "--report",
        str(report_path),
        *job_args,
    ]
    print(f"  job: {shlex.join(cmd)}", flush=True)
    run = run_monitored(cmd, out_dir.parent / "job.log")
    run["report"] = json.loads(report_path.read_text()) if report_path.exists() else {}
    run["files"] = table_files(out_dir)
    return run


def run_reference(data_dir: Path, out_dir: Path) -> dict:
    """One run of the DuckDB reference CLI (same process model as the job)."""
    cmd = [PYTHON, str(REFERENCE), "--input", str(data_dir), "--output", str(out_dir)]
    print(f"  reference: {shlex.join(cmd)}", flush=True)
    log = out_dir.parent / "reference.log"
    run = run_monitored(cmd, log)
    text = log.read_text()
    run["report"] = json.loads(text[text.index("{") :])
    run["files"] = table_files(out_dir)
    return run


def best(runs: list[dict]) -> dict:
    """The fastest run stands for the size; all wall times are kept alongside."""
    return min(runs, key=lambda r: r["wall_s"])


def bench_size(label: str, events: int, args: argparse.Namespace) -> dict:
    """Generate (or reuse), run the job and the reference; return one result record."""
    print(f"\n=== {label}: {events:,} events, {args.songs:,} songs ===", flush=True)
    data_dir, gen_s = ensure_dataset(label, args.songs, events, args.seed)
    n_files, n_bytes = dir_size(data_dir)
    record: dict = {
        "size": label,
        "events": events,
        "songs": args.songs,
        "seed": args.seed,
        "input_files": n_files,
        "input_mb": n_bytes / MB,
        "generate_s": gen_s,
        # Other work on the machine skews wall times; keep the evidence with the numbers.
        "load_avg_1m_before": os.getloadavg()[0],
        "cpus": psutil.cpu_count(),
    }
    job_runs = [run_job(data_dir, CACHE_DIR / label / "out" / "job", args.job_args) for _ in range(args.repeat)]
    record["job"] = best(job_runs)
    record["job"]["all_wall_s"] = [r["wall_s"] for r in job_runs]
    if not args.skip_reference:
        ref_runs = [run_reference(data_dir, CACHE_DIR / label / "out" / "reference") for _ in range(args.repeat)]
        record["reference"] = best(ref_runs)
        record["reference"]["all_wall_s"] = [r["wall_s"] for r in ref_runs]
        record["ratio_job_over_reference"] = record["job"]["wall_s"] / best(ref_runs)["wall_s"]
    print_record(record)
    return record


def _fmt_seconds(seconds: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in seconds.items() if isinstance(v, (int, float)))


def print_record(rec: dict) -> None:
    """Human-readable block for one size."""
    job = rec["job"]
    report = job.get("report", {})
    print(
        f"--- {rec['size']}: input {rec['input_files']:,} files, {rec['input_mb']:.0f} MB, "
        f"load average before {rec['load_avg_1m_before']:.1f} on {rec['cpus']} CPUs"
    )
    wall = job["wall_s"]
    print(
        f"job        wall {wall:8.1f} s  ({rec['events'] / wall:,.0f} events/s)  "
        f"runs {[round(x, 1) for x in job['all_wall_s']]}"
    )
    print(f"           stages: {_fmt_seconds(report.get('seconds', {})) or 'n/a'}")
    print(f"           driver JVM peak RSS {job['peak_jvm_mb']:,.0f} MB (process tree {job['peak_tree_mb']:,.0f} MB)")
    rows = report.get("tables", {})
    ref = rec.get("reference")
    ref_rows = ref["report"].get("tables", {}) if ref else {}
    print(f"           {'table':<10}{'rows':>12}{'files':>8}{'MB':>9}{'ref rows':>12}")
    for table in TABLES:
        f = job["files"][table]
        print(
            f"           {table:<10}{rows.get(table, '?'):>12}{f['files']:>8}{f['mb']:>9.1f}"
            f"{ref_rows.get(table, '-'):>12}"
        )
    if ref:
        print(
            f"reference  wall {ref['wall_s']:8.1f} s  "
            f"stages: {_fmt_seconds(ref['report'].get('seconds', {}))}  "
            f"peak RSS {ref['peak_tree_mb']:,.0f} MB"
        )
        print(f"ratio job/reference {rec['ratio_job_over_reference']:.1f}x")
        mismatch = {t for t in TABLES if str(rows.get(t)) != str(ref_rows.get(t))}
        if rows and mismatch:
            print(f"WARNING row counts differ for: {', '.join(sorted(mismatch))}")


def plot(records: list[dict]) -> None:
    """Seconds vs events for the job and the reference (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    events = [r["events"] for r in records]
    ax.plot(events, [r["job"]["wall_s"] for r in records], "o-", label="Spark job (etl.py)")
    with_ref = [r for r in records if "reference" in r]
    if with_ref:
        ax.plot(
            [r["events"] for r in with_ref],
            [r["reference"]["wall_s"] for r in with_ref],
            "s--",
            label="DuckDB reference",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events")
    ax.set_ylabel("wall seconds")
    ax.set_title(f"Sparkify ETL, {records[0]['songs']:,} songs, {psutil.cpu_count()} cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(CHART_PNG, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Benchmark etl.py against DuckDB.")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="event counts, e.g. 100k,1M,4M")
    parser.add_argument("--songs", type=int, default=DEFAULT_SONGS, help="songs (one file each)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs per size")
    parser.add_argument("--skip-reference", action="store_true", help="do not run DuckDB")
    parser.add_argument(
        "--job-args",
        default="",
        help='extra etl.py arguments, e.g. "--shuffle-partitions 8"',
    )
    args = parser.parse_args(argv)
    args.job_args = shlex.split(args.job_args)
    if not ETL.exists():
        raise SystemExit(f"job not found: {ETL}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    records = []
    for label in args.sizes.split(","):
        records.append(bench_size(label.strip(), parse_size(label), args))
        # Rewritten after each size so that a long run leaves partial results behind.
        RESULTS_JSON.write_text(json.dumps(records, indent=2))
        plot(records)
    print(f"\nresults: {RESULTS_JSON.relative_to(REPO)}, chart: {CHART_PNG.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
