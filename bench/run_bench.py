"""Benchmark the Spark job against the DuckDB reference on generated data of growing size.

Run from the repository root::

    .venv/bin/python bench/run_bench.py --sizes 100k,1M,4M

For each size and series it generates (once, cached in ``bench/.cache/<label>/``) a
dataset with ``tools/generate_data.py`` in the S3 layout, runs ``etl.py`` exactly as a user
would (``--input/--output/--report``, default ``[SPARK]`` settings), samples the peak RSS of
the driver JVM (in local mode the executors are threads of that JVM), reads the job's
JSON report, counts the parquet part files per table, then times
``bench/duckdb_reference.py`` on the same input. Two series: ``growing`` (the catalogue
grows with the events, 10k songs per 1M events, 22 songs per artist as in the MSD) and
``fixed`` (10k songs whatever the size, the course bucket's songs per artist). Before the
sizes it measures Spark's fixed cost: a bare PySpark session (start with PySpark's
defaults, one-row count, stop; a fresh process), the same with the job's own session
settings, and the bundled sample end to end (``python etl.py``), interleaved. Results go
to ``bench/results/results.json`` and ``bench/results/seconds_vs_size.png``, with each
goal's ratio and whether it was met.
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
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import etl

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
DEFAULT_STARTUP_REPEAT = 3
# The growing series: catalogue size and shape follow the events, as a real service's do.
SONGS_PER_MILLION_EVENTS = 10_000
MSD_SONGS_PER_ARTIST = 22.0  # the full Million Song Dataset: 1M songs by 44,745 artists
SERIES = {
    "growing": "10k songs per 1M events, 22 songs per artist (MSD), one song per file",
    "fixed": "10k songs (--songs) at every size, about 1.8 songs per artist (course bucket), one song per file",
}
LOCAL_MODE_MEMORY = "local mode: the executors are threads of the driver JVM, so its peak RSS is theirs"
# Goals of issue 11, each a ratio measured in one run on this machine.
GOAL_JOB_OVER_REFERENCE = {"1M": 4.0, "4M": 3.0}
GOAL_SAMPLE_OVER_BARE_SESSION = 2.5
# Goal of issue 12: the quality checks add at most 10% to the job's wall time at 1M events,
# measured by runs with and without them (CHECKS = off), alternated in one benchmark run.
GOAL_QUALITY_COST = 1.10
DEFAULT_QUALITY_COST_SIZES = "1M"
QUALITY_OFF_SECTION = "\n[QUALITY]\nCHECKS = off\n"
SAMPLE_DIR = REPO / "sample_data"
# Spark's fixed cost, what any PySpark program pays before its first row: a bare PySpark
# session (the baseline: PySpark's defaults, one-row count, stop) and, for
# comparison, a session with the job's own start-up settings (etl.create_spark_session,
# dl.cfg's [SPARK]: the JVM options and local file system the job gives itself). Run as
# `python -c CODE REPO`.
BARE_SESSION_CODE = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[*]").getOrCreate()
spark.range(1).count()
spark.stop()
"""
JOB_SESSION_CODE = """
import os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import etl
with tempfile.TemporaryDirectory() as scratch:
    settings = etl.load_settings(etl.parse_args(["--output", scratch]))
    spark = etl.create_spark_session(settings, os.path.join(scratch, "spark.log"))
    spark.range(1).count()
    spark.stop()
"""
GENERATOR_LAYOUT = "s3"
CACHE_MANIFEST = "cache.json"
SIZE_SUFFIXES = {"k": 1_000, "m": 1_000_000}
SAMPLE_INTERVAL_S = 0.2
MB = 1024 * 1024
JVM_PROCESS_NAME = "java"
PART_FILE_SUFFIX = ".parquet"
TABLES = etl.TABLE_NAMES
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


def generator_args(
    songs: int, events: int, seed: int, out: Path, songs_per_file: int = 1, songs_per_artist: float | None = None
) -> list[str]:
    """The generator's CLI arguments (the cache key is made of the same values)."""
    args = ["--songs", str(songs), "--events", str(events), "--seed", str(seed), "--out", str(out)]
    args += ["--layout", GENERATOR_LAYOUT, "--songs-per-file", str(songs_per_file)]
    if songs_per_artist is not None:
        args += ["--songs-per-artist", str(songs_per_artist)]
    return args


def ensure_dataset(
    label: str,
    songs: int,
    events: int,
    seed: int,
    songs_per_file: int = 1,
    songs_per_artist: float | None = None,
) -> tuple[Path, float | None]:
    """Return (input dir, generation seconds or None when reused from bench/.cache/<label>)."""
    if not GENERATOR.exists():
        raise SystemExit(f"generator not found: {GENERATOR}")
    base = CACHE_DIR / label
    data_dir = base / "input"
    key = {
        "songs": songs,
        "events": events,
        "seed": seed,
        "layout": GENERATOR_LAYOUT,
        "songs_per_file": songs_per_file,
        "songs_per_artist": songs_per_artist,
        "generator_sha256": file_sha256(GENERATOR),
    }
    manifest = base / CACHE_MANIFEST
    if manifest.exists() and json.loads(manifest.read_text()).get("key") == key:
        return data_dir, None
    if data_dir.exists():
        shutil.rmtree(data_dir)
    manifest.unlink(missing_ok=True)
    base.mkdir(parents=True, exist_ok=True)
    cmd = [PYTHON, str(GENERATOR), *generator_args(songs, events, seed, data_dir, songs_per_file, songs_per_artist)]
    print(f"  generating: {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    # Written last: an interrupted generation is never mistaken for a complete one.
    manifest.write_text(json.dumps({"key": key, "seconds": seconds}, indent=2))
    return data_dir, seconds


def input_of(size: str, seed: int) -> Path:
    """The bundled sample, or the growing series' input of this size (generated once, cached)."""
    if size == "sample":
        return SAMPLE_DIR
    events = parse_size(size)
    songs = max(1, events * SONGS_PER_MILLION_EVENTS // 1_000_000)
    data, _ = ensure_dataset(f"{size}-growing", songs, events, seed, songs_per_artist=MSD_SONGS_PER_ARTIST)
    return data


def save_results(results: dict, path: Path) -> int:
    """Write a comparison's results, with the load average it ended under."""
    results["load_avg_1m_after"] = os.getloadavg()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return 0


def dir_size(path: Path) -> tuple[int, int]:
    """(number of files, bytes) below ``path``."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _rss_of(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


# The JVM's threads by what they do, from their names in /proc (Linux): the JIT's
# compilers compete with the tasks for the cores, so their CPU is worth seeing.
THREAD_KINDS = (
    ("c2_compiler", "C2 CompilerThre"),
    ("c1_compiler", "C1 CompilerThre"),
    ("tasks", "Executor task l"),
    ("gc", "GC Thread"),
    ("gc", "G1 "),
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each thread of a process so far, by thread id: (kind, seconds)."""
    result = {}
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tids = [entry.name for entry in task_dir.iterdir()]
    except OSError:
        return result
    for tid in tids:
        try:
            stat = (task_dir / tid / "stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        kind = next((kind for kind, prefix in THREAD_KINDS if name.startswith(prefix)), "other")
        result[int(tid)] = (kind, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return result


def _name_of(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


class PeakRss:
    """Peak RSS per role while a block runs, sampled every ``interval`` seconds in a thread.

    ``roles()`` returns the processes of each role right now; a role's peak is that of
    the sum of its processes' RSS, and every process's own peak is kept too.
    """

    def __init__(
        self, roles: Callable[[], dict[str, list[psutil.Process]]], interval: float = SAMPLE_INTERVAL_S
    ) -> None:
        self.roles, self.interval = roles, interval
        self.peaks_mb: dict[str, float] = {}
        self.process_peaks_mb: dict[str, dict[int, float]] = {}
        self.load_samples: list[float] = []  # the 1-minute load average: other work skews times
        self.jvm_threads: dict[tuple[int, int], tuple[str, float]] = {}  # (pid, tid) -> last (kind, CPU s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                roles = self.roles()
            except psutil.Error:
                roles = {}
            self.load_samples.append(os.getloadavg()[0])
            for process in roles.get("jvm", []):
                for tid, seen in thread_cpu(process.pid).items():
                    self.jvm_threads[(process.pid, tid)] = seen
            for role, processes in roles.items():
                sizes = {p.pid: _rss_of(p) / MB for p in processes}
                self.peaks_mb[role] = max(self.peaks_mb.get(role, 0.0), sum(sizes.values()))
                own = self.process_peaks_mb.setdefault(role, {})
                for pid, size in sizes.items():
                    own[pid] = max(own.get(pid, 0.0), size)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def jvm_cpu_s(self) -> dict[str, float]:
        """The JVMs' CPU seconds by thread kind, as last sampled (up to one interval before each exited)."""
        totals: dict[str, float] = {}
        for kind, seconds in self.jvm_threads.values():
            totals[kind] = totals.get(kind, 0.0) + seconds
        totals["total"] = sum(totals.values())
        return {kind: round(seconds, 1) for kind, seconds in sorted(totals.items())}


def run_monitored(cmd: list[str], log_path: Path) -> dict:
    """Run ``cmd`` from the repo root, sampling the peak RSS of it and of its JVM child.

    The JVM is the ``java`` descendant spawned by PySpark's launcher: that is the driver
    whose heap the job sizes, so it is reported on its own.
    """
    start = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)

        def roles() -> dict[str, list[psutil.Process]]:
            children = root.children(recursive=True)
            return {"jvm": [c for c in children if _name_of(c) == JVM_PROCESS_NAME], "tree": [root, *children]}

        with PeakRss(roles) as peaks:
            proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return {
        "wall_s": wall,
        "peak_jvm_mb": peaks.peaks_mb.get("jvm", 0.0),
        "peak_tree_mb": peaks.peaks_mb.get("tree", 0.0),
        "load_avg_1m_max_during": max(peaks.load_samples, default=0.0),
        "jvm_cpu_s": peaks.jvm_cpu_s(),
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


def series_songs(series: str, events: int, args: argparse.Namespace) -> tuple[int, float | None]:
    """(songs, mean songs per artist or None for the generator's default) of a series at a size."""
    if series == "growing":
        return max(1, events * SONGS_PER_MILLION_EVENTS // 1_000_000), MSD_SONGS_PER_ARTIST
    return args.songs, None


def bench_size(series: str, size: str, args: argparse.Namespace) -> dict:
    """Generate (or reuse), run the job and the reference; return one result record."""
    events = parse_size(size)
    songs, per_artist = series_songs(series, events, args)
    label = size if series == "fixed" else f"{size}-{series}"  # fixed: the cache folders of before
    print(f"\n=== {series} {size}: {events:,} events, {songs:,} songs ===", flush=True)
    data_dir, gen_s = ensure_dataset(label, songs, events, args.seed, songs_per_artist=per_artist)
    n_files, n_bytes = dir_size(data_dir)
    record: dict = {
        "series": series,
        "size": size,
        "events": events,
        "songs": songs,
        "songs_per_artist": per_artist,
        "seed": args.seed,
        "input_files": n_files,
        "input_mb": n_bytes / MB,
        "generate_s": gen_s,
        # Other work on the machine skews wall times; keep the evidence with the numbers.
        "load_avg_1m_before": os.getloadavg()[0],
        "cpus": psutil.cpu_count(),
    }
    quality_cost = series == "growing" and size in args.quality_cost_sizes
    job_runs, unchecked_runs = [], []
    for _ in range(max(args.repeat, 2) if quality_cost else args.repeat):
        job_runs.append(run_job(data_dir, CACHE_DIR / label / "out" / "job", args.job_args))
        if quality_cost:  # alternated, so both see the same machine
            config = ["--config", str(quality_off_config(CACHE_DIR / label))]
            unchecked_runs.append(run_job(data_dir, CACHE_DIR / label / "out" / "job", config + args.job_args))
    record["job"] = best(job_runs)
    record["job"]["all_wall_s"] = [r["wall_s"] for r in job_runs]
    if quality_cost:
        without = best(unchecked_runs)
        record["quality_cost"] = {
            "with_checks_s": record["job"]["wall_s"],
            "without_checks_s": without["wall_s"],
            "ratio": record["job"]["wall_s"] / without["wall_s"],
            "with_checks_all_s": record["job"]["all_wall_s"],
            "without_checks_all_s": [r["wall_s"] for r in unchecked_runs],
            "quality_stage_s": [r["report"].get("seconds", {}).get("quality") for r in job_runs],
            "how": "the same command with a copy of dl.cfg plus [QUALITY] CHECKS = off, runs alternated",
        }
    record["memory"] = {
        "driver_peak_rss_mb": record["job"]["peak_jvm_mb"],
        "executors_peak_rss_mb": record["job"]["peak_jvm_mb"],
        "note": LOCAL_MODE_MEMORY,
    }
    if not args.skip_reference:
        ref_runs = [run_reference(data_dir, CACHE_DIR / label / "out" / "reference") for _ in range(args.repeat)]
        record["reference"] = best(ref_runs)
        record["reference"]["all_wall_s"] = [r["wall_s"] for r in ref_runs]
        record["ratio_job_over_reference"] = record["job"]["wall_s"] / best(ref_runs)["wall_s"]
    print_record(record)
    if quality_cost:
        cost = record["quality_cost"]
        print(
            f"quality checks: with {cost['with_checks_s']:.1f} s, without {cost['without_checks_s']:.1f} s,"
            f" ratio {cost['ratio']:.3f} (goal <= {GOAL_QUALITY_COST}); quality stage {cost['quality_stage_s']} s"
        )
    return record


def quality_off_config(folder: Path) -> Path:
    """The repository's dl.cfg with the quality checks turned off, for the cost comparison."""
    path = folder / "dl-quality-off.cfg"
    text = (REPO / "dl.cfg").read_text()
    if "\n[QUALITY]" in text:
        raise SystemExit("dl.cfg already has a [QUALITY] section: the comparison would not be like with like")
    path.write_text(text + QUALITY_OFF_SECTION)  # its paths do not matter: --input and --output win
    return path


def measure_startup(repeat: int) -> dict:
    """Spark's fixed cost: a bare session vs the bundled sample end to end, fastest of ``repeat``."""
    out = CACHE_DIR / "sample"
    out.mkdir(parents=True, exist_ok=True)
    bare_cmd = [PYTHON, "-c", BARE_SESSION_CODE, str(REPO)]
    job_session_cmd = [PYTHON, "-c", JOB_SESSION_CODE, str(REPO)]
    sample_cmd = [PYTHON, str(ETL), "--output", str(out / "out"), "--report", str(out / "report.json")]
    print(f"\n=== start-up: bare session vs {SAMPLE_DIR.name}/ end to end, {repeat} runs each ===", flush=True)
    print(f"  bare session: python -c BARE_SESSION_CODE; sample: {shlex.join(sample_cmd)}", flush=True)
    bare, job_session, sample = [], [], []
    for _ in range(repeat):  # interleaved, so a busy spell hurts all three alike
        bare.append(run_monitored(bare_cmd, out / "bare.log"))
        job_session.append(run_monitored(job_session_cmd, out / "job_session.log"))
        sample.append(run_monitored(sample_cmd, out / "sample.log"))
    result = {
        "bare_session": {**best(bare), "all_wall_s": [r["wall_s"] for r in bare]},
        "job_session": {**best(job_session), "all_wall_s": [r["wall_s"] for r in job_session]},
        "sample": {**best(sample), "all_wall_s": [r["wall_s"] for r in sample]},
        "sample_report_seconds": json.loads((out / "report.json").read_text())["seconds"],
        "load_avg_1m_before": os.getloadavg()[0],
    }
    result["ratio_sample_over_bare_session"] = result["sample"]["wall_s"] / result["bare_session"]["wall_s"]
    runs = {
        name: [round(x, 1) for x in result[name]["all_wall_s"]] for name in ("bare_session", "job_session", "sample")
    }
    print(
        f"bare session {result['bare_session']['wall_s']:.1f} s (runs {runs['bare_session']}), "
        f"the job's session {result['job_session']['wall_s']:.1f} s (runs {runs['job_session']}), "
        f"sample {result['sample']['wall_s']:.1f} s (runs {runs['sample']}), "
        f"ratio {result['ratio_sample_over_bare_session']:.2f}x (goal <= {GOAL_SAMPLE_OVER_BARE_SESSION}x)",
        flush=True,
    )
    return result


def goals(results: dict) -> list[dict]:
    """Each goal of issue 11 with the ratio this run measured and whether it was met."""
    checks = []
    startup = results.get("startup")
    if startup:
        measured = startup["ratio_sample_over_bare_session"]
        checks.append(("sample end to end / bare session", GOAL_SAMPLE_OVER_BARE_SESSION, measured))
    for series, records in results["series"].items():
        for record in records:
            limit = GOAL_JOB_OVER_REFERENCE.get(record["size"])
            if limit and "ratio_job_over_reference" in record:
                checks.append(
                    (f"job / DuckDB at {record['size']} ({series})", limit, record["ratio_job_over_reference"])
                )
            if "quality_cost" in record:
                ratio = record["quality_cost"]["ratio"]
                checks.append((f"with / without quality checks at {record['size']}", GOAL_QUALITY_COST, ratio))
    return [
        {"goal": name, "at_most": limit, "measured": round(value, 2), "met": value <= limit}
        for name, limit, value in checks
    ]


def _fmt_seconds(seconds: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in seconds.items() if isinstance(v, (int, float)))


def print_record(rec: dict) -> None:
    """Human-readable block for one size."""
    job = rec["job"]
    report = job.get("report", {})
    print(
        f"--- {rec['series']} {rec['size']}: input {rec['input_files']:,} files, {rec['input_mb']:.0f} MB, "
        f"load average before {rec['load_avg_1m_before']:.1f} on {rec['cpus']} CPUs"
    )
    wall = job["wall_s"]
    print(
        f"job        wall {wall:8.1f} s  ({rec['events'] / wall:,.0f} events/s)  "
        f"runs {[round(x, 1) for x in job['all_wall_s']]}, load average up to {job['load_avg_1m_max_during']:.1f}"
    )
    print(f"           stages: {_fmt_seconds(report.get('seconds', {})) or 'n/a'}")
    print(
        f"           driver JVM peak RSS {job['peak_jvm_mb']:,.0f} MB = executors' ({LOCAL_MODE_MEMORY}); "
        f"process tree {job['peak_tree_mb']:,.0f} MB"
    )
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


def plot(results: dict) -> None:
    """Left: seconds vs events per series (log-log); right: each goal's ratio against its limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (times, ratios) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    styles = {"growing": "-", "fixed": ":"}
    for series, records in results["series"].items():
        events = [r["events"] for r in records]
        line = styles.get(series, "-")
        times.plot(events, [r["job"]["wall_s"] for r in records], "o" + line, label=f"Spark job, {series}")
        with_ref = [r for r in records if "reference" in r]
        if with_ref:
            times.plot(
                [r["events"] for r in with_ref],
                [r["reference"]["wall_s"] for r in with_ref],
                "s" + line,
                label=f"DuckDB reference, {series}",
            )
    startup = results.get("startup")
    if startup:
        times.axhline(startup["bare_session"]["wall_s"], color="grey", lw=0.8, label="bare PySpark session")
    if any(results["series"].values()):
        times.set_xscale("log")
        times.set_yscale("log")
    times.set_xlabel("events")
    times.set_ylabel("wall seconds")
    times.set_title(f"Sparkify ETL on {psutil.cpu_count()} cores (growing: 10k songs per 1M events)")
    times.grid(True, which="both", alpha=0.3)
    times.legend(fontsize=8)
    checks = results.get("goals", [])
    if checks:
        names = [g["goal"].replace(" (", "\n(") for g in checks]
        colours = ["tab:green" if g["met"] else "tab:red" for g in checks]
        bars = ratios.barh(names, [g["measured"] for g in checks], color=colours)
        ratios.bar_label(bars, fmt="%.2fx", fontsize=8)
        ratios.scatter([g["at_most"] for g in checks], names, marker="|", s=400, color="black", label="goal")
        ratios.set_xlabel("ratio (lower is better)")
        ratios.invert_yaxis()
        ratios.tick_params(axis="y", labelsize=7)
        ratios.legend(fontsize=8)
    ratios.set_title("goals: measured ratio vs limit")
    fig.tight_layout()
    fig.savefig(CHART_PNG, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Benchmark etl.py against DuckDB.")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="event counts, e.g. 100k,1M,4M")
    parser.add_argument(
        "--series",
        default=",".join(SERIES),
        help=f"comma-separated, of: {'; '.join(f'{k}: {v}' for k, v in SERIES.items())}",
    )
    parser.add_argument("--songs", type=int, default=DEFAULT_SONGS, help="songs of the fixed series (one file each)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs per size")
    parser.add_argument(
        "--startup-repeat", type=int, default=DEFAULT_STARTUP_REPEAT, help="runs of each start-up measure"
    )
    parser.add_argument("--skip-startup", action="store_true", help="no bare session / sample measurement")
    parser.add_argument("--skip-reference", action="store_true", help="do not run DuckDB")
    parser.add_argument(
        "--quality-cost-sizes",
        default=DEFAULT_QUALITY_COST_SIZES,
        help="sizes of the growing series also run without the quality checks (alternated), e.g. 1M,4M; '' for none",
    )
    parser.add_argument(
        "--job-args",
        default="",
        help='extra etl.py arguments, e.g. "--max-reject-rate 0.1"',
    )
    args = parser.parse_args(argv)
    args.job_args = shlex.split(args.job_args)
    args.quality_cost_sizes = {size.strip() for size in args.quality_cost_sizes.split(",") if size.strip()}
    series = [name.strip() for name in args.series.split(",")]
    if not ETL.exists():
        raise SystemExit(f"job not found: {ETL}")
    if unknown := set(series) - set(SERIES):
        raise SystemExit(f"unknown series {sorted(unknown)}; known: {', '.join(SERIES)}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": shlex.join(["bench/run_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "series_definitions": {name: SERIES[name] for name in series},
        "memory_note": LOCAL_MODE_MEMORY,
        "series": {name: [] for name in series},
    }

    def save() -> None:
        # Rewritten after each step so that a long run leaves partial results behind.
        results["goals"] = goals(results)
        RESULTS_JSON.write_text(json.dumps(results, indent=2))
        plot(results)

    if not args.skip_startup:
        results["startup"] = measure_startup(args.startup_repeat)
        save()
    for size in args.sizes.split(","):
        for name in series:
            results["series"][name].append(bench_size(name, size.strip(), args))
            save()
    print("\ngoals:")
    for goal in results["goals"]:
        verdict = "met" if goal["met"] else "NOT met"
        print(f"  {goal['goal']:<45} {goal['measured']:6.2f}x  (<= {goal['at_most']}x)  {verdict}")
    print(f"\nresults: {RESULTS_JSON.relative_to(REPO)}, chart: {CHART_PNG.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
