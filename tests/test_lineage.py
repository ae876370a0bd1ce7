"""Lineage: the OpenLineage Spark listener, turned on from dl.cfg by plain [SPARK] properties,
writes events that name the job's two input datasets and five tables, tied to the run_id.

The job sets the Spark property spark.sparkify.run_id (etl.RUN_ID_PROPERTY) when a run
starts; `spark.openlineage.capturedProperties = spark.sparkify.run_id` makes the listener
copy it into each event's spark_properties run facet.
"""

from __future__ import annotations

import json
from pathlib import Path

from jobrun import REPO, TABLES, run_job, write_config

import etl

LISTENER = "io.openlineage.spark.agent.OpenLineageSparkListener"
NAMESPACE = "sparkify-test"


def lineage_properties(events: Path, jars: list[Path]) -> dict[str, str]:
    """The [SPARK] lines a user adds for lineage into a file (README, "Lineage")."""
    listener_jar = [str(jar) for jar in jars if "openlineage-spark" in jar.name]
    assert listener_jar, f"no OpenLineage jar among {jars}"
    return {
        "spark.jars": listener_jar[0],
        "spark.extraListeners": LISTENER,
        "spark.openlineage.transport.type": "file",
        "spark.openlineage.transport.location": str(events),
        "spark.openlineage.namespace": NAMESPACE,
        "spark.openlineage.capturedProperties": etl.RUN_ID_PROPERTY,
    }


def test_lineage_events_name_inputs_tables_and_run_id(tmp_path, s3a_jars):
    events = tmp_path / "lineage" / "events.jsonl"
    events.parent.mkdir()
    config = write_config(
        tmp_path / "dl.cfg",
        str(REPO / "sample_data"),
        str(tmp_path / "out"),
        spark=lineage_properties(events, s3a_jars),
    )
    result = run_job("--config", str(config), report=tmp_path / "report.json")
    assert result.code == 0, result.output[-3000:]
    run_id = result.report["run_id"]
    lines = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    assert lines, "the listener wrote no event"
    inputs = {dataset["name"] for event in lines for dataset in event.get("inputs", [])}
    outputs = {dataset["name"] for event in lines for dataset in event.get("outputs", [])}
    for folder in (etl.SONG_DATA_DIR, etl.LOG_DATA_DIR):
        assert any(name.rstrip("/").endswith(f"/{folder}") for name in inputs), (folder, sorted(inputs))
    for table in TABLES:
        assert any(name.rstrip("/").endswith(f"/out/{table}") for name in outputs), (table, sorted(outputs))
    assert {event["job"]["namespace"] for event in lines} == {NAMESPACE}

    def tagged(event: dict) -> str | None:
        facet = event.get("run", {}).get("facets", {}).get("spark_properties", {})
        return facet.get("properties", {}).get(etl.RUN_ID_PROPERTY)

    writes = [event for event in lines if event.get("outputs")]
    assert writes and all(tagged(event) == run_id for event in writes), [
        (event["job"]["name"], tagged(event)) for event in writes
    ]
