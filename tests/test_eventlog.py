"""bench/eventlog.py on real event logs: the job's plans honour the broadcast threshold, and
writes are named by their job description when there is one, else by their output folder."""

from __future__ import annotations

import sys
from pathlib import Path

import jobrun
import pytest
from infra import spark_submit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import eventlog
import run_scale

SAMPLE = jobrun.REPO / "sample_data"
NO_BROADCAST = {"spark.sql.autoBroadcastJoinThreshold": "-1"}
NAMED_WRITES = """
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
rows = spark.range(0, 100, 1, 1).selectExpr("id", "id % 3 AS part")  # one task: a file per part
spark.sparkContext.setJobDescription("write alpha")
rows.write.partitionBy("part").parquet(sys.argv[1] + "/folder_a")
spark.sparkContext.setJobDescription(None)
rows.repartition(2).write.parquet(sys.argv[1] + "/folder_b")
spark.stop()
"""


MIN_TABLE_WRITES_AT_ONCE = 3


@pytest.fixture(scope="module")
def no_broadcast_run(tmp_path_factory) -> tuple[jobrun.JobResult, dict]:
    """The job on the sample with the broadcast threshold off and the event log on."""
    tmp_path = tmp_path_factory.mktemp("no_broadcast")
    log_dir = tmp_path / "eventlog"
    log_dir.mkdir()
    spark = {**NO_BROADCAST, **run_scale.event_log_conf(log_dir)}
    config = jobrun.write_config(tmp_path / "dl.cfg", str(SAMPLE), str(tmp_path / "out"), spark=spark)
    result = jobrun.run_job("--config", str(config), report=tmp_path / "report.json")
    assert result.code == 0, result.stderr[-3000:]
    return result, eventlog.analyse(log_dir)


def test_no_broadcast_in_any_plan_when_the_threshold_is_off(no_broadcast_run):
    """With autoBroadcastJoinThreshold=-1 in [SPARK], neither the initial nor any adaptive
    plan holds a broadcast: the catalogue join is a sort-merge join."""
    result, analysis = no_broadcast_run
    assert analysis["broadcast_executions"] == []
    assert analysis["join_strategies"].get("SortMergeJoin", 0) >= 1
    for table, rows in result.report["tables"].items():
        assert analysis["writes"][table]["records_written"]["total"] == rows, table


def test_the_table_writes_run_side_by_side(no_broadcast_run):
    """The load stage's writes are submitted at once, so several tables are written at the
    same moment (written one after another, no two writes would ever overlap)."""
    result, analysis = no_broadcast_run
    spans = {table: analysis["writes"][table]["span_ms"] for table in result.report["tables"]}
    most_at_once = max(sum(start <= moment < end for start, end in spans.values()) for moment, _ in spans.values())
    assert most_at_once >= MIN_TABLE_WRITES_AT_ONCE, spans


def test_writes_are_named_by_job_description_else_by_folder(tmp_path):
    log_dir = tmp_path / "eventlog"
    log_dir.mkdir()
    script = tmp_path / "named_writes.py"
    script.write_text(NAMED_WRITES)
    proc = spark_submit(script, str(tmp_path / "out"), master="local[2]", conf=run_scale.event_log_conf(log_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    writes = eventlog.analyse(log_dir)["writes"]
    assert set(writes) == {"alpha", "folder_b"}
    assert writes["alpha"]["records_written"]["total"] == writes["folder_b"]["records_written"]["total"] == 100
    assert writes["alpha"]["files"] == 3 and writes["folder_b"]["tasks"] == writes["folder_b"]["files"] == 2
