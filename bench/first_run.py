"""A new user's very first run against the runs after it, on the bundled sample.

Run from the repository root::

    .venv/bin/python bench/first_run.py

The job's first run on a machine builds what later runs reuse from the cache folder
(``$SPARKIFY_ETL_CACHE``): the fork-free local file system jar and the class data sharing
archive, saved as its JVM exits. This times ``python etl.py`` on ``sample_data/`` with an
empty cache folder (the first run), then ``--repeat`` more runs with that folder, and a
bare PySpark session (run_bench.py's) for scale. Results go to
``bench/results/first_run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from run_bench import BARE_SESSION_CODE, CACHE_DIR, ETL, PYTHON, REPO, RESULTS_DIR, best, run_monitored

RESULTS_JSON = RESULTS_DIR / "first_run.json"
CACHE_VARIABLE = "SPARKIFY_ETL_CACHE"
DEFAULT_REPEAT = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs after the first")
    args = parser.parse_args(argv)
    work = CACHE_DIR / "first-run"
    shutil.rmtree(work, ignore_errors=True)
    (work / "cache").mkdir(parents=True)
    os.environ[CACHE_VARIABLE] = str(work / "cache")  # inherited by the runs below
    command = [PYTHON, str(ETL), "--output", str(work / "out")]
    first = run_monitored(command, work / "first.log")
    print(f"  first run (empty cache)  {first['wall_s']:5.1f} s", flush=True)
    later = []
    for _ in range(args.repeat):
        later.append(run_monitored(command, work / "later.log"))
        print(f"  a later run              {later[-1]['wall_s']:5.1f} s", flush=True)
    bare = run_monitored([PYTHON, "-c", BARE_SESSION_CODE, str(REPO)], work / "bare.log")
    result = {
        "first_run_wall_s": first["wall_s"],
        "later_run_wall_s": best(later)["wall_s"],
        "all_later_wall_s": [round(run["wall_s"], 2) for run in later],
        "bare_session_wall_s": bare["wall_s"],
        "cache_files": sorted(path.name for path in (work / "cache").iterdir()),
        "load_avg_1m_after": os.getloadavg()[0],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"first run {result['first_run_wall_s']:.1f} s, later runs {result['later_run_wall_s']:.1f} s,"
        f" bare PySpark session {result['bare_session_wall_s']:.1f} s"
    )
    print(f"results: {RESULTS_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
