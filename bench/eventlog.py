"""What a run of etl.py did, per table, read from Spark's event log.

    .venv/bin/python bench/eventlog.py EVENT_LOG [--json]

EVENT_LOG is a file written with ``spark.eventLog.enabled=true`` and
``spark.eventLog.dir=file:///DIR`` (or DIR itself when it holds one log). For each table's
write stage: tasks, max / median of records written and of shuffle read (records, bytes),
output files and bytes; the join operators of each SQL plan and whether any plan (initial
or adaptive) holds a broadcast; each executor's peak memory. The scale test and the
benchmark use ``analyse``; nothing here is used by the job.

A write is a SQL execution whose plan runs ``InsertIntoHadoopFsRelationCommand``. Its
table is the job description when the job set one (``WRITE_DESCRIPTION_PREFIX`` +
table: ``spark.sparkContext.setJobDescription(f"write {name}")`` around the write), else
the last folder of the command's output path (``.../songplays``; ``_rejected/events`` for
the rejects), which holds for local, staged and s3a:// output alike. Its write stage is
the stage of that execution whose result tasks wrote output (the range-partitioning
sample and the shuffle before it write none).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

WRITE_DESCRIPTION_PREFIX = "write "
WRITE_COMMAND = "Execute InsertIntoHadoopFsRelationCommand"
WRITE_PATH = re.compile(re.escape(WRITE_COMMAND) + r"\nInput: [^\n]*\nArguments: ([^,\s]+),")
FILES_METRIC, BYTES_METRIC = "number of written files", "written output"
JOIN_OPERATORS = ("BroadcastHashJoin", "SortMergeJoin", "ShuffledHashJoin", "BroadcastNestedLoopJoin")
BROADCAST_OPERATORS = ("BroadcastHashJoin", "BroadcastNestedLoopJoin", "BroadcastExchange")
SQL_EVENT = "org.apache.spark.sql.execution.ui."
IN_PROGRESS_SUFFIX = ".inprogress"
RESULT_TASK = "ResultTask"
SUCCESS = "Success"
MB = 1024 * 1024
# Executor metrics that bound a JVM's memory: heap and off-heap in use, and the process's
# RSS (only with spark.executor.processTreeMetrics.enabled=true; 0 otherwise).
MEMORY_METRICS = {"heap": "JVMHeapMemory", "off_heap": "JVMOffHeapMemory", "rss": "ProcessTreeJVMRSSMemory"}
TASK_MEASURES = ("records_written", "bytes_written", "shuffle_records_read", "shuffle_bytes_read")


@dataclass
class Execution:
    """One SQL execution: its description, every plan it went through, its metrics."""

    description: str
    plans: list[str] = field(default_factory=list)
    final_nodes: Counter = field(default_factory=Counter)
    metric_names: dict[int, str] = field(default_factory=dict)  # accumulator id -> metric name
    jobs: list[int] = field(default_factory=list)
    started_ms: int | None = None  # the execution's start and end on the driver's clock
    ended_ms: int | None = None


def read_events(path: str | Path) -> list[dict]:
    """The JSON events of one log file, or of the only log in a folder.

    A log still being written (``.inprogress``) may end in half a line: that line is left out.
    """
    path = Path(path)
    if path.is_dir():
        logs = [p for p in path.iterdir() if p.is_file()]
        if len(logs) != 1:
            raise ValueError(f"{path} holds {len(logs)} event logs; name one")
        path = logs[0]
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    events = [json.loads(line) for line in lines[:-1]]
    try:
        events.extend(json.loads(line) for line in lines[-1:])
    except json.JSONDecodeError:
        if not path.name.endswith(IN_PROGRESS_SUFFIX):
            raise
    return events


def _plan_nodes(info: dict, nodes: Counter, metrics: dict[int, str]) -> None:
    """Operator names and write-metric accumulators of a plan tree (cached plans included)."""
    nodes[info["nodeName"]] += 1
    if info["nodeName"] == WRITE_COMMAND:
        metrics.update({m["accumulatorId"]: m["name"] for m in info["metrics"]})
    for child in info["children"]:
        _plan_nodes(child, nodes, metrics)


def _task_record(event: dict) -> dict:
    metrics = event.get("Task Metrics") or {}
    output = metrics.get("Output Metrics", {})
    shuffle = metrics.get("Shuffle Read Metrics", {})
    return {
        "type": event["Task Type"],
        "executor": event["Task Info"]["Executor ID"],
        "records_written": output.get("Records Written", 0),
        "bytes_written": output.get("Bytes Written", 0),
        "shuffle_records_read": shuffle.get("Total Records Read", 0),
        "shuffle_bytes_read": shuffle.get("Remote Bytes Read", 0) + shuffle.get("Local Bytes Read", 0),
    }


def _spread(values: list[int]) -> dict:
    """max, the median task (the lower middle: with two tasks the mean would hide a 10:0
    split) and max / median, the skew the scale test bounds."""
    median = statistics.median_low(values) if values else 0
    high = max(values, default=0)
    ratio = high / median if median else (1.0 if high == 0 else float("inf"))
    return {"max": high, "median": median, "total": sum(values), "max_over_median": round(ratio, 3)}


def _table_name(execution: Execution, job_descriptions: list[str]) -> str | None:
    """The table a write execution wrote: its job description, else its output folder."""
    for description in [execution.description, *job_descriptions]:
        if description and description.startswith(WRITE_DESCRIPTION_PREFIX):
            return description[len(WRITE_DESCRIPTION_PREFIX) :].strip()
    for plan in execution.plans:
        found = WRITE_PATH.search(plan)
        if found:
            parts = found.group(1).rstrip("/").split("/")
            return "/".join(parts[-2:]) if parts[-2].startswith("_") else parts[-1]
    return None


def analyse(source: str | Path | list[dict]) -> dict:
    """{"writes": per table, "joins": per execution, "broadcast_executions", "executors"}."""
    events = source if isinstance(source, list) else read_events(source)
    executions: dict[int, Execution] = {}
    job_execution: dict[int, int] = {}
    job_description: dict[int, str] = {}
    job_stages: dict[int, list[int]] = {}
    driver_metrics: dict[int, int] = {}
    tasks: dict[int, list[dict]] = defaultdict(list)
    peaks: dict[str, Counter] = defaultdict(Counter)

    def track_memory(executor: str, values: dict) -> None:
        for label, key in MEMORY_METRICS.items():
            peaks[executor][label] = max(peaks[executor][label], values.get(key, 0))

    for event in events:
        kind = event["Event"].removeprefix(SQL_EVENT)
        if kind in ("SparkListenerSQLExecutionStart", "SparkListenerSQLAdaptiveExecutionUpdate"):
            execution = executions.setdefault(event["executionId"], Execution(event.get("description", "")))
            if kind == "SparkListenerSQLExecutionStart":
                execution.started_ms = event["time"]
            execution.plans.append(event["physicalPlanDescription"])
            execution.final_nodes = Counter()
            _plan_nodes(event["sparkPlanInfo"], execution.final_nodes, execution.metric_names)
        elif kind == "SparkListenerSQLExecutionEnd" and event["executionId"] in executions:
            executions[event["executionId"]].ended_ms = event["time"]
        elif kind == "SparkListenerDriverAccumUpdates":
            driver_metrics.update(dict(event["accumUpdates"]))  # the values, posted once per write
        elif kind == "SparkListenerJobStart":
            properties = event.get("Properties") or {}
            if "spark.sql.execution.id" in properties:
                job_execution[event["Job ID"]] = int(properties["spark.sql.execution.id"])
            job_description[event["Job ID"]] = properties.get("spark.job.description", "")
            job_stages[event["Job ID"]] = event["Stage IDs"]
        elif kind == "SparkListenerTaskEnd":
            if event["Task End Reason"]["Reason"] == SUCCESS:
                tasks[event["Stage ID"]].append(_task_record(event))
            track_memory(event["Task Info"]["Executor ID"], event.get("Task Executor Metrics") or {})
        elif kind == "SparkListenerStageExecutorMetrics":
            track_memory(event["Executor ID"], event["Executor Metrics"])
    for job, execution_id in sorted(job_execution.items()):
        if execution_id in executions:
            executions[execution_id].jobs.append(job)

    writes = {}
    for execution_id, execution in sorted(executions.items()):
        if not any(WRITE_COMMAND in plan for plan in execution.plans):
            continue
        stages = [stage for job in execution.jobs for stage in job_stages[job]]
        writing = [
            stage
            for stage in stages
            if any(t["type"] == RESULT_TASK and (t["bytes_written"] or t["records_written"]) for t in tasks[stage])
        ]
        ran = [stage for stage in stages if tasks[stage]]
        if not (writing or ran):
            continue
        stage = max(writing or ran, key=lambda s: (sum(t["records_written"] for t in tasks[s]), s))
        name = _table_name(execution, [job_description[job] for job in execution.jobs])
        metric = {
            metric_name: sum(v for k, v in driver_metrics.items() if execution.metric_names.get(k) == metric_name)
            for metric_name in (FILES_METRIC, BYTES_METRIC)
        }
        writes[name or f"execution {execution_id}"] = {
            "execution": execution_id,
            "stage": stage,
            "tasks": len(tasks[stage]),
            **{measure: _spread([t[measure] for t in tasks[stage]]) for measure in TASK_MEASURES},
            "files": metric[FILES_METRIC],
            "output_bytes": metric[BYTES_METRIC],
            "span_ms": [execution.started_ms, execution.ended_ms],
        }
    joins = {
        execution_id: {op: n for op, n in execution.final_nodes.items() if op in JOIN_OPERATORS}
        for execution_id, execution in sorted(executions.items())
    }
    broadcast = [
        execution_id
        for execution_id, execution in sorted(executions.items())
        if any(op in plan for plan in execution.plans for op in BROADCAST_OPERATORS)
    ]
    executors = {
        executor: {f"peak_{label}_mb": round(value / MB, 1) for label, value in sorted(values.items())}
        for executor, values in sorted(peaks.items())
    }
    return {
        "writes": writes,
        "joins": {k: v for k, v in joins.items() if v},
        "join_strategies": dict(sum((Counter(v) for v in joins.values()), Counter())),
        "broadcast_executions": broadcast,
        "executors": executors,
    }


def format_report(result: dict) -> str:
    """The analysis as a few aligned lines."""
    lines = [
        f"{'write':<18}{'stage':>6}{'tasks':>6}{'records max/median':>24}{'shuffle rows max/median':>28}"
        f"{'shuffle MB max/median':>24}{'files':>7}{'MB':>9}"
    ]
    for name, w in result["writes"].items():
        records, rows, size = w["records_written"], w["shuffle_records_read"], w["shuffle_bytes_read"]
        lines.append(
            f"{name:<18}{w['stage']:>6}{w['tasks']:>6}"
            f"{records['max']:>12,}/{records['median']:<11,}"
            f"{rows['max']:>14,}/{rows['median']:<13,}"
            f"{size['max'] / MB:>12.1f}/{size['median'] / MB:<11.1f}"
            f"{w['files']:>7}{w['output_bytes'] / MB:>9.1f}"
        )
    lines.append(f"join operators in the final plans: {result['join_strategies'] or 'none'}")
    lines.append(f"executions with a broadcast in any plan: {result['broadcast_executions'] or 'none'}")
    for executor, peak in result["executors"].items():
        lines.append(f"executor {executor}: " + ", ".join(f"{k} {v:,.0f}" for k, v in peak.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("event_log", help="an event log file, or a folder holding one")
    parser.add_argument("--json", action="store_true", help="print the analysis as JSON")
    args = parser.parse_args(argv)
    result = analyse(args.event_log)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
