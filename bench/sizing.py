"""EMR sizing for 10M, 100M and 1B events, extrapolated from measured per-core throughput.

    .venv/bin/python bench/sizing.py      # reads bench/results/{scale,results}.json,
                                          # writes bench/results/sizing.json, prints a table
    .venv/bin/python bench/sizing.py --bench bench/results/results.json

``--bench`` names the run_bench.py results to take the local figures from: the scale run
and the benchmark should come from the same day, as this machine's speed varies by day.

Method: a run costs a fixed part F (Spark's start and the per-stage scheduling of every
query; measured as the bundled sample end to end, ``startup.sample`` in results.json)
plus a part proportional to the events. The proportional part's throughput per core is
measured twice: on the scale run's cluster (two 1-core executors, shuffles between JVMs,
bench/results/scale.json) and on the 4M-event local benchmark of the growing series
(results.json); the lower one is used. On EMR:

    wall = F + YARN_START_S + events / (per-core rate * vCPUs * S3_EFFICIENCY)
    cost = (core nodes + 1 primary) * (EC2 + EMR price per hour) * (wall + PROVISION_S)

Every assumption is a named constant below; none of the EMR figures was measured on EMR.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SCALE_JSON, BENCH_JSON, SIZING_JSON = (RESULTS / n for n in ("scale.json", "results.json", "sizing.json"))
COMMAND = ".venv/bin/python bench/sizing.py"

SIZES = {"10M": 10_000_000, "100M": 100_000_000, "1B": 1_000_000_000}
INSTANCE = "m5.xlarge"  # 4 vCPU, 16 GiB; EMR gives YARN 12 GiB of it: 3 GiB per vCPU
VCPUS_PER_NODE = 4
# us-east-1 on-demand, Linux, per instance-hour: AWS's public price list as last known
# (2024); not re-checked here (this machine has no internet access).
EC2_PRICE_PER_HOUR = 0.192
EMR_PRICE_PER_HOUR = 0.048
PRICES_AS_OF = "2024 AWS price list (us-east-1 on-demand), not re-checked"
# Assumptions, not measurements: one EMR vCPU does the work of one core of this machine
# (both are hyperthreads of current server CPUs); S3 and YARN cost 30 % of the throughput
# the local-disk runs measured; a transient cluster takes 8 minutes to provision (billed);
# YARN starts the application in 30 s.
S3_EFFICIENCY = 0.7
PROVISION_S = 8 * 60
YARN_START_S = 30
# Core nodes: one per 25M events (at least 2), so that a run stays around 20 minutes;
# the cost per run hardly depends on this choice (time falls as nodes rise).
EVENTS_PER_CORE_NODE = 25_000_000
MIN_CORE_NODES = 2


def repo_relative(path: Path) -> str:
    """A results path as the README names it: from the repository root when inside it."""
    resolved = path.resolve()
    root = RESULTS.parent.parent
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)


def per_core_rate(events: int, wall_s: float, fixed_s: float, cores: int) -> float:
    """Events per core-second of the part of a run that grows with the data."""
    return events / ((wall_s - fixed_s) * cores)


def sizing(bench_json: Path = BENCH_JSON, command: str = COMMAND) -> dict:
    """The sizing table and the measured inputs it rests on."""
    scale = json.loads(SCALE_JSON.read_text())
    bench = json.loads(bench_json.read_text())
    fixed_s = bench["startup"]["sample"]["wall_s"]
    scale_cores = scale["cluster"]["workers"] * scale["cluster"]["cores_per_worker"]
    largest = max(bench["series"]["growing"], key=lambda r: r["events"])
    rates = {
        "scale_run": per_core_rate(scale["input"]["events"], scale["job"]["wall_s"], fixed_s, scale_cores),
        f"local_{largest['size']}_growing": per_core_rate(
            largest["events"], largest["job"]["wall_s"], fixed_s, largest["cpus"]
        ),
    }
    rate = min(rates.values())
    event_bytes = scale["input"]["mb"] * 1024 * 1024 / scale["input"]["events"]  # JSON per event, songs included
    rows = []
    for label, events in SIZES.items():
        nodes = max(MIN_CORE_NODES, math.ceil(events / EVENTS_PER_CORE_NODE))
        vcpus = nodes * VCPUS_PER_NODE
        wall = fixed_s + YARN_START_S + events / (rate * vcpus * S3_EFFICIENCY)
        cost = (nodes + 1) * (EC2_PRICE_PER_HOUR + EMR_PRICE_PER_HOUR) * (wall + PROVISION_S) / 3600
        rows.append(
            {
                "events": label,
                "input_gb": round(events * event_bytes / 1024**3, 1),
                "instance": INSTANCE,
                "core_nodes": nodes,
                "vcpus": vcpus,
                "wall_min": round(wall / 60, 1),
                "cost_usd": round(cost, 2),
            }
        )
    return {
        "command": command,
        "sources": [
            str(SCALE_JSON.relative_to(RESULTS.parent.parent)),
            repo_relative(bench_json),
        ],
        "fixed_s": round(fixed_s, 1),
        "per_core_events_per_s": {k: round(v) for k, v in rates.items()},
        "per_core_events_per_s_used": round(rate),
        "assumptions": {
            "ec2_price_per_hour": EC2_PRICE_PER_HOUR,
            "emr_price_per_hour": EMR_PRICE_PER_HOUR,
            "prices_as_of": PRICES_AS_OF,
            "s3_efficiency": S3_EFFICIENCY,
            "provision_s": PROVISION_S,
            "yarn_start_s": YARN_START_S,
            "events_per_core_node": EVENTS_PER_CORE_NODE,
            "primary_nodes": 1,
        },
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=BENCH_JSON, help="run_bench.py results to read")
    args = parser.parse_args(argv)
    result = sizing(args.bench, " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])]))
    SIZING_JSON.write_text(json.dumps(result, indent=2) + "\n")
    print(f"per-core rates {result['per_core_events_per_s']}, used {result['per_core_events_per_s_used']:,}")
    print("| events | input JSON | core nodes | vCPUs | expected wall | cost per run |")
    print("|---|---|---|---|---|---|")
    for row in result["rows"]:
        print(
            f"| {row['events']} | {row['input_gb']:,} GB | {row['core_nodes']} x {row['instance']} | {row['vcpus']} "
            f"| {row['wall_min']} min | ${row['cost_usd']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
