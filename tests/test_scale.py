"""The job at scale on a cluster: two standalone workers (1 core, 1 GB each), 4M events, a
catalogue of 200k songs in multi-record files (bench/run_scale.py does the run).

Checked: every table equals the DuckDB reference row for row, and Spark's event log
shows each table's write stage with its largest task within 2x of the median task, in
records written and in shuffle read. Slow (minutes): deselected by default, run with

    .venv/bin/python -m pytest -m scale tests/test_scale.py

The committed bench/results/scale.json comes from `.venv/bin/python bench/run_scale.py`,
the same measurement.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import run_scale

import etl

TABLES = etl.TABLE_NAMES
SKEWED_MEASURES = ("records_written", "shuffle_records_read")
SCALE_TIMEOUT_S = 2400

pytestmark = [pytest.mark.slow, pytest.mark.scale, pytest.mark.timeout(SCALE_TIMEOUT_S)]


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory) -> dict:
    """One scale run for every check below; its JSON is kept beside the test's files."""
    work = tmp_path_factory.mktemp("scale")
    result = run_scale.measure(work)
    (work / "scale.json").write_text(json.dumps(result, indent=2))
    return result


@pytest.mark.parametrize("table", TABLES)
def test_table_equals_the_reference(scale_run, table):
    diff = scale_run["table_differences"][table]
    assert scale_run["tables_equal_reference"][table], diff
    assert diff["rows_job"] == scale_run["job"]["tables"][table]


@pytest.mark.parametrize("table", TABLES)
def test_write_stage_has_no_task_over_twice_the_median(scale_run, table):
    write = scale_run["eventlog"]["writes"][table]
    assert write["records_written"]["total"] == scale_run["job"]["tables"][table]
    for measure in SKEWED_MEASURES:
        spread = write[measure]
        assert spread["max"] <= run_scale.SKEW_LIMIT * spread["median"], (measure, write)


def test_ran_on_both_workers(scale_run):
    """Both 1 GB executors took part (a run on one would not test the cluster's shuffle)."""
    executors = set(scale_run["eventlog"]["executors"]) - {"driver"}
    assert len(executors) == run_scale.WORKERS
