"""The test suite's Spark session compiled (Spark's default) against interpreted, alternated.

Run from the repository root::

    .venv/bin/python bench/session_codegen.py --days 8 --rounds 2

Most of the suite's time is daily runs made in the test process (``etl.run`` on the
session fixture of ``tests/conftest.py``): a month of them is 30 runs of a few thousand
rows, where compiling each plan's code costs more than running it. Each round runs, in a
fresh process per variant, the first ``--days`` days of the generated month of
``tests/test_incremental.py`` as daily runs into an empty output, with the test fixture's
session settings, code generation on (``compiled``) or off (``interpreted``: the
fixture's). A run's time is the mean of its daily runs after the first (a full run).
Results go to ``bench/results/session_codegen.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run_bench import PYTHON, REPO, RESULTS_DIR, save_results

RESULTS_JSON = RESULTS_DIR / "session_codegen.json"
VARIANTS = ("compiled", "interpreted")


def daily_runs(days: int, variant: str) -> list[float]:
    """In this process: the month's first days as daily runs; seconds of each run."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    import conftest
    from test_incremental import day_files, land, make_month, settings

    import etl

    spark = conftest.make_test_session()
    if variant == "compiled":  # back to Spark's defaults
        for key in conftest.INTERPRETED:
            spark.conf.unset(key)
    with tempfile.TemporaryDirectory(prefix="test-session-") as work:
        month = make_month(Path(work) / "source", days=days)
        feed, output = Path(work) / "feed", Path(work) / "out"
        shutil.copytree(month / "song_data", feed / "song_data")
        seconds = []
        for path in day_files(month):
            land(month, feed, path)
            began = time.monotonic()
            etl.run(spark, settings(feed, output))
            seconds.append(round(time.monotonic() - began, 2))
    spark.stop()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one process's part
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(daily_runs(args.days, args.variant)))
        return 0
    runs: dict[str, list] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            command = [PYTHON, __file__, "--days", str(args.days), "--variant", variant]
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
            seconds = json.loads(done.stdout.strip().splitlines()[-1])
            daily = seconds[1:]
            runs[variant].append({"seconds": seconds, "mean_daily_s": round(sum(daily) / len(daily), 2)})
            print(variant, runs[variant][-1]["mean_daily_s"], flush=True)
    means = {variant: min(run["mean_daily_s"] for run in runs[variant]) for variant in VARIANTS}
    results = {
        "command": f"bench/session_codegen.py --days {args.days} --rounds {args.rounds}",
        "best_mean_daily_s": means,
        "interpreted_over_compiled": round(means["interpreted"] / means["compiled"], 3),
        "runs": runs,
    }
    return save_results(results, RESULTS_JSON)


if __name__ == "__main__":
    sys.exit(main())
