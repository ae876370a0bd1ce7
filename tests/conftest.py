"""Shared fixtures: one local SparkSession for the whole run, the repo's paths, shared data."""

from __future__ import annotations

import fcntl
import inspect
import os
import pickle
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))  # etl.py is a script at the top, not a package
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no loopback-hostname warning, no LAN bind
os.environ.setdefault("TZ", "UTC")

from infra import *  # noqa: E402, F403 - S3 server, Spark cluster and S3A jar fixtures
from jobrun import JobResult, run_job  # noqa: E402

import etl  # noqa: E402

etl.ensure_java()


# The test session interprets, not compiles (as Spark's own tests may): on jobs of a few rows
# code generation costs more than it saves (docs/performance.md: The test suite). Results are
# the same by Spark's contract, and every `python etl.py` test compiles as users' runs do.
INTERPRETED = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}


@pytest.fixture(scope="session")
def spark():
    session = make_test_session()
    yield session
    session.stop()


def make_test_session():
    """A small local session configured like the job's (UTC, few shuffle partitions)."""
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master("local[2]")
        .appName("sparkify-etl-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.host", "127.0.0.1")
        # tests are hundreds of jobs of a few rows: C1 alone, as the job takes for its short runs
        .config("spark.driver.extraJavaOptions", " ".join(etl.SHORT_RUN_JIT_OPTIONS))
    )
    # the job's local-mode file system (no chmod fork per written file), as the job's own JVM gets it
    local_fs = etl.with_local_file_system({})
    for key, value in {**etl.SPARK_DEFAULTS, **etl.FORCED_SPARK_SETTINGS, **local_fs, **INTERPRETED}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


Made = TypeVar("Made")


def once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Made]) -> Made:
    """make(folder) once in the whole test session, in whichever xdist worker asks first.

    The workers of one session share the parent of their base temporary folders: the first
    to take the lock there runs make and leaves its result; the others wait for the lock and
    read that result. A make that fails leaves nothing, so the next asker runs (and fails) it
    again. What make writes into its folder is read by tests of both workers: read only.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / "once" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    result = folder.parent / f"{name}.pickle"
    with (folder.parent / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not result.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed make left
            folder.mkdir()
            result.write_bytes(pickle.dumps(make(folder)))
    return pickle.loads(result.read_bytes())


def shared_dataset(name: str) -> Path:
    """A dataset of ../shared/data, or a skip that says why it is missing."""
    path = SHARED_DATA / name
    if not (path / "song_data").is_dir() or not (path / "log_data").is_dir():
        pytest.skip(f"{path} is absent (the shared real data lives beside the repo, not in it)")
    return path


# --- Runs that tests of several files read: one per session, whichever worker needs it first ----


@pytest.fixture(scope="session")
def sample_data_run(tmp_path_factory) -> tuple[Path, JobResult]:
    """`python etl.py --input sample_data --output DIR`, as README shows it: (DIR, result). Read only."""

    def make(folder: Path) -> tuple[Path, JobResult]:
        result = run_job("--input", "sample_data", "--output", str(folder / "tables"))
        assert result.code == 0, result.output
        return folder / "tables", result

    return once_per_session(tmp_path_factory, "sample-data-run", make)


@pytest.fixture(scope="session")
def shared_sample_run(tmp_path_factory) -> tuple[Path, Path, JobResult]:
    """python etl.py over ../shared/data/sample with --report: (data, output, result). Read only."""
    data = shared_dataset("sample")

    def make(folder: Path) -> tuple[Path, JobResult]:
        result = run_job("--input", str(data), "--output", str(folder / "out"), report=folder / "report.json")
        assert result.code == 0, result.output
        return folder / "out", result

    return (data, *once_per_session(tmp_path_factory, "shared-sample-run", make))


# --- The quick loop: `bash scripts/test.sh --quick` runs the tests of rules, not of whole runs --

# A test is of a whole job (marked `job`) when it, a fixture it uses or a function of its
# module they call runs the job (in this process or as a user does), spark-submit, an S3
# server or a cluster.
CALLED = re.compile(r"\b([a-z_][a-z0-9_]*)\(")
JOB_CALLS = ("etl.run(", "run_job(", "subprocess.", "Popen(", "s3_server", "spark_cluster", "spark_submit(", "s3a_jars")


def runs_a_job(item: pytest.Item) -> bool:
    functions = [getattr(item, "function", None)]
    for definitions in item._fixtureinfo.name2fixturedefs.values():  # pytest's record of the fixtures used
        functions += [definition.func for definition in definitions]
    seen, sources = set(), []
    while functions:  # the test, its fixtures, and the functions of its module they call
        function = functions.pop()
        if function is None or function in seen:
            continue
        seen.add(function)
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        sources.append(source)
        module = vars(inspect.getmodule(function) or object())
        functions += [module.get(name) for name in CALLED.findall(source) if inspect.isfunction(module.get(name))]
    return any(call in source for source in sources for call in JOB_CALLS)


# The files that take longest (measured with --durations=0), longest first: scripts/test.sh hands
# whole files to two workers in this order (--dist loadfile --no-loadscope-reorder), so no long
# file starts last and keeps one worker busy alone at the end. The other files follow, as collected.
LONGEST_FIRST = (
    "test_incremental.py",
    "test_s3_real_data.py",
    "test_quality.py",
    "test_s3.py",
    "test_incremental_safety.py",
    "test_cluster.py",
    "test_failures.py",
    "test_incremental_s3.py",
    "test_job_end_to_end.py",
    "test_validation.py",
    "test_input_files.py",
    "test_analysts.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if runs_a_job(item):
            item.add_marker(pytest.mark.job)
    rank = {name: number for number, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests stay in order
