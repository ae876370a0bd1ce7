"""Two versions of etl.py on the same input, alternated: what a change did, on a noisy machine.

Run from the repository root::

    .venv/bin/python bench/versions.py --base bc6c802 --sizes 1M --repeat 3

A benchmark run on one day is not comparable with one on another (the machine is shared:
the same bare PySpark session took 6.2 s one day and 14.8 s three days later). This runs
``etl.py`` as committed at ``--base`` (read with ``git show``: the job is one
self-contained script) and the working tree's ``etl.py``, each a full run as a user
launches it, alternated over ``--repeat`` rounds on the growing series' inputs (generated
once and cached, as run_bench.py does), and keeps every run's wall time, report stages
and JVM CPU by thread kind. Results go to ``bench/results/versions.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from run_bench import (
    CACHE_DIR,
    DEFAULT_SEED,
    ETL,
    PYTHON,
    REPO,
    RESULTS_DIR,
    best,
    input_of,
    run_monitored,
    save_results,
)

RESULTS_JSON = RESULTS_DIR / "versions.json"
HEAD = "working tree"
CONFIG = REPO / "dl.cfg"  # both versions read the repository's, as they would beside it


def script_at(revision: str, folder: Path) -> Path:
    """etl.py as committed at ``revision``, in ``folder``."""
    text = subprocess.run(
        ["git", "show", f"{revision}:etl.py"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    path = folder / f"etl-{revision}.py"
    path.write_text(text)
    return path


def commit_of(revision: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", revision], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare the working tree's etl.py with")
    parser.add_argument("--sizes", default="1M", help="sample and/or sizes of the growing series")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--results", type=Path, default=RESULTS_JSON, help="where the results go")
    args = parser.parse_args(argv)
    work = CACHE_DIR / "versions"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    scripts = {args.base: script_at(args.base, work), HEAD: ETL}
    results = {
        "command": " ".join(["bench/versions.py", *(argv if argv is not None else sys.argv[1:])]),
        "base": {"revision": args.base, "commit": commit_of(args.base)},
        "head": {"revision": HEAD, "commit_below": commit_of("HEAD")},
        "sizes": [],
    }
    for size in args.sizes.split(","):
        data = input_of(size, args.seed)
        runs: dict[str, list[dict]] = {version: [] for version in scripts}
        for round_number in range(args.repeat):
            order = list(scripts) if round_number % 2 == 0 else list(reversed(scripts))
            for version in order:
                output, report = work / "out", work / "report.json"
                shutil.rmtree(output, ignore_errors=True)
                command = [
                    PYTHON,
                    str(scripts[version]),
                    "--config",
                    str(CONFIG),
                    "--input",
                    str(data),
                    "--output",
                    str(output),
                ]
                run = run_monitored([*command, "--report", str(report)], work / "job.log")
                run["stage_seconds"] = json.loads(report.read_text()).get("seconds")
                runs[version].append(run)
                print(
                    f"  {size:<7} {version:<14} wall {run['wall_s']:6.1f} s, stages {run['stage_seconds']}", flush=True
                )
        fastest = {version: best(version_runs)["wall_s"] for version, version_runs in runs.items()}
        results["sizes"].append(
            {
                "size": size,
                "wall_s": fastest,
                "head_over_base": fastest[HEAD] / fastest[args.base],
                "runs": runs,
            }
        )
        print(f"{size}: working tree / {args.base} = {fastest[HEAD] / fastest[args.base]:.3f}", flush=True)
    return save_results(results, args.results)


if __name__ == "__main__":
    sys.exit(main())
