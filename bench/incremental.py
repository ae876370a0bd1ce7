"""What a daily run costs against a full run, both measured in one benchmark run.

Run from the repository root::

    .venv/bin/python bench/incremental.py --events 1M --songs 10000

The input (generated once, cached like run_bench.py's) is a month of daily log files. The
benchmark publishes days 1..N-1 with one full run (setup, not timed as a result), lands the
last day's file, then times, as a user launches them (``python etl.py``, JVM start
included): the daily run (``--incremental``, reading only the new file) and a full run over
all the files into another output. The order alternates over ``--repeat`` rounds, so a
busy machine hurts both alike; the fastest of each is kept. Results go to
``bench/results/incremental.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from run_bench import CACHE_DIR, ETL, PYTHON, RESULTS_DIR, ensure_dataset, parse_size, run_monitored

RESULTS_JSON = RESULTS_DIR / "incremental.json"
DEFAULT_EVENTS = "1M"
DEFAULT_SONGS = 10_000
DEFAULT_SEED = 42
DEFAULT_REPEAT = 2
GOAL_RATIO = 0.25


def link_tree(source: Path, target: Path, files: list[Path]) -> None:
    """Hard links (no copy) of the given files of source at the same places under target."""
    for path in files:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not destination.exists():
            os.link(path, destination)


def job(args: list[str], log: Path) -> dict:
    """One python etl.py run; its wall time, peak memory and the report it wrote."""
    report = log.with_suffix(".report.json")
    report.unlink(missing_ok=True)
    run = run_monitored([PYTHON, str(ETL), *args, "--report", str(report)], log)
    run["report"] = json.loads(report.read_text())
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default=DEFAULT_EVENTS)
    parser.add_argument("--songs", type=int, default=DEFAULT_SONGS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="rounds of (daily, full)")
    args = parser.parse_args(argv)
    events = parse_size(args.events)
    label = args.events  # the same cached input as run_bench.py at this size
    data, _ = ensure_dataset(label, args.songs, events, args.seed)
    days = sorted((data / "log_data").rglob("*.json"), key=lambda path: path.name)
    song_files = sorted(path for path in (data / "song_data").rglob("*") if path.is_file())
    work = CACHE_DIR / label / "work"
    shutil.rmtree(work, ignore_errors=True)
    feed, daily_out, full_out = work / "feed", work / "daily", work / "full"

    print(f"setup: songs and {len(days) - 1} day files published by one full run", flush=True)
    link_tree(data, feed, song_files + days[:-1])
    setup = job(["--input", str(feed), "--output", str(daily_out)], work / "setup.log")
    link_tree(data, feed, days[-1:])
    state_before = work / "state-before"
    shutil.copytree(daily_out, state_before)

    daily_runs, full_runs = [], []
    for round_number in range(args.repeat):
        order = ("daily", "full") if round_number % 2 == 0 else ("full", "daily")
        for kind in order:
            if kind == "daily":
                shutil.rmtree(daily_out)
                shutil.copytree(state_before, daily_out)
                run = job(["--input", str(feed), "--output", str(daily_out), "--incremental"], work / "daily.log")
                assert run["report"]["files"]["events"]["read"] == 1, run["report"]["files"]
                daily_runs.append(run)
            else:
                shutil.rmtree(full_out, ignore_errors=True)
                full_runs.append(job(["--input", str(feed), "--output", str(full_out)], work / "full.log"))
            print(f"  {kind:<5} wall {(daily_runs if kind == 'daily' else full_runs)[-1]['wall_s']:6.1f} s", flush=True)

    daily, full = min(daily_runs, key=lambda r: r["wall_s"]), min(full_runs, key=lambda r: r["wall_s"])
    result = {
        "events": events,
        "songs": args.songs,
        "days": len(days),
        "new_day_events": daily["report"]["input"]["events"],
        "setup_full_run_wall_s": setup["wall_s"],
        "daily": {key: daily[key] for key in ("wall_s", "peak_jvm_mb")} | {"seconds": daily["report"]["seconds"]},
        "full": {key: full[key] for key in ("wall_s", "peak_jvm_mb")} | {"seconds": full["report"]["seconds"]},
        "all_daily_wall_s": [round(run["wall_s"], 2) for run in daily_runs],
        "all_full_wall_s": [round(run["wall_s"], 2) for run in full_runs],
        "ratio_daily_over_full": daily["wall_s"] / full["wall_s"],
        "goal_ratio": GOAL_RATIO,
        "load_avg_1m_after": os.getloadavg()[0],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"daily run {daily['wall_s']:.1f} s ({result['new_day_events']:,} events) vs full run {full['wall_s']:.1f} s"
        f" ({events:,} events): {result['ratio_daily_over_full']:.2f} (goal <= {GOAL_RATIO})"
    )
    print(f"results: {RESULTS_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
