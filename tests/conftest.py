"""Shared fixtures: one local SparkSession for the whole run, the repo's paths, shared data."""

from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))  # etl.py is a script at the top, not a package
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no loopback-hostname warning, no LAN bind
os.environ.setdefault("TZ", "UTC")

from infra import *  # noqa: E402, F403 - S3 server, Spark cluster and S3A jar fixtures

import etl  # noqa: E402

etl.ensure_java()


@pytest.fixture(scope="session")
def spark():
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
    for key, value in {**etl.SPARK_DEFAULTS, **etl.FORCED_SPARK_SETTINGS, **etl.with_local_file_system({})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def shared_dataset(name: str) -> Path:
    """A dataset of ../shared/data, or a skip that says why it is missing."""
    path = SHARED_DATA / name
    if not (path / "song_data").is_dir() or not (path / "log_data").is_dir():
        pytest.skip(f"{path} is absent (the shared real data lives beside the repo, not in it)")
    return path


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if runs_a_job(item):
            item.add_marker(pytest.mark.job)
