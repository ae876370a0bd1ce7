"""Two versions of etl.py on the same input, alternated: what a change did, on a noisy machine.

Run from the repository root::

    .venv/bin/python bench/versions.py --base bc6c802 --sizes 1M --repeat 3

A benchmark run on one day is not comparable with one on another (the machine is shared:
the same bare PySpark session took 6.2 s one day and 14.8 s three days later). This runs
``etl.py`` as committed at ``--base`` (read with ``git show``: the job is one
self-contained script) and the working tree's ``etl.py``, each run as a user launches it,
alternated over ``--repeat`` rounds on the growing series' inputs (generated once and
cached, as run_bench.py does), and keeps every run's wall time, report stages and JVM CPU
by thread kind. A size ``daily-1M`` times a one-day daily run (``--incremental``) on 1M
events of history: the other days are published once by a full run (not timed), and each
timed run starts from a copy of that output. Results go to ``bench/results/versions.json``.
"""

from __future__ import annotations

import argparse
import json
import os
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


DAILY = "daily-"


def daily_history(size: str, seed: int, work: Path, script: Path) -> tuple[Path, Path]:
    """(input, published output) for a daily run of size: every day but the last published by one full run."""
    data = input_of(size, seed)
    feed, published = work / "daily-feed", work / "daily-published"
    shutil.rmtree(feed, ignore_errors=True)
    shutil.rmtree(published, ignore_errors=True)
    days = sorted((data / "log_data").rglob("*.json"), key=lambda path: path.name)
    files = [path for path in (data / "song_data").rglob("*") if path.is_file()] + days[:-1]
    for path in files + days[-1:]:
        (feed / path.relative_to(data)).parent.mkdir(parents=True, exist_ok=True)
    for path in files:
        os.link(path, feed / path.relative_to(data))
    command = [PYTHON, str(script), "--config", str(CONFIG), "--input", str(feed), "--output", str(published)]
    subprocess.run(command, check=True, capture_output=True)
    os.link(days[-1], feed / days[-1].relative_to(data))  # the new day lands
    return feed, published


def commit_of(revision: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", revision], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare the working tree's etl.py with")
    parser.add_argument(
        "--head", help="compare with this revision, or this file (a variant of etl.py), instead of the working tree"
    )
    parser.add_argument("--sizes", default="1M", help="sample and/or sizes of the growing series")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--results", type=Path, default=RESULTS_JSON, help="where the results go")
    args = parser.parse_args(argv)
    work = CACHE_DIR / "versions"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    head = ETL
    if args.head:
        head = Path(args.head) if Path(args.head).is_file() else script_at(args.head, work)
        shutil.copy(head, work / "etl-head.py")  # a file may change while this runs
        head = work / "etl-head.py"
    scripts = {args.base: script_at(args.base, work), HEAD: head}
    results = {
        "command": " ".join(["bench/versions.py", *(argv if argv is not None else sys.argv[1:])]),
        "base": {"revision": args.base, "commit": commit_of(args.base)},
        "head": {"revision": args.head or HEAD, "commit_below": commit_of("HEAD")},
        "sizes": [],
    }
    for size in args.sizes.split(","):
        daily = size.startswith(DAILY)
        if daily:
            data, published = daily_history(size[len(DAILY) :], args.seed, work, scripts[args.base])
        else:
            data = input_of(size, args.seed)
        runs: dict[str, list[dict]] = {version: [] for version in scripts}
        for round_number in range(args.repeat):
            order = list(scripts) if round_number % 2 == 0 else list(reversed(scripts))
            for version in order:
                output, report = work / "out", work / "report.json"
                shutil.rmtree(output, ignore_errors=True)
                if daily:
                    shutil.copytree(published, output)
                command = [
                    PYTHON,
                    str(scripts[version]),
                    "--config",
                    str(CONFIG),
                    "--input",
                    str(data),
                    "--output",
                    str(output),
                    *(["--incremental"] if daily else []),
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
