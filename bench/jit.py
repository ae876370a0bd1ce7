"""Which JIT a run should get: C1 alone (one or two compiler threads) or tiered compilation, by input size.

Run from the repository root::

    .venv/bin/python bench/jit.py --sizes sample,100k,1M

The job picks C1 alone for a run known to read less than ``etl.SHORT_RUN_INPUT_BYTES``
and tiered compilation otherwise. This measures both on the same inputs (the bundled
sample and run_bench.py's growing series, generated once and cached), each a full run as a
user launches it (``python etl.py``); the mode is forced by appending its flag to
``spark.driver.extraJavaOptions`` in a copy of dl.cfg (a later JVM flag wins). Runs
alternate over ``--repeat`` rounds and the fastest of each is kept; each run's JVM CPU is
recorded by thread kind (the compilers' share is what the thresholds change). ``tiered_4x``
is the job's earlier choice for long runs, C2 at four times its default thresholds (now
sixteen). Results go to ``bench/results/jit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from run_bench import (
    CACHE_DIR,
    DEFAULT_SEED,
    ETL,
    MSD_SONGS_PER_ARTIST,
    PYTHON,
    REPO,
    RESULTS_DIR,
    SAMPLE_DIR,
    SONGS_PER_MILLION_EVENTS,
    best,
    ensure_dataset,
    parse_size,
    run_monitored,
)

sys.path.insert(0, str(REPO))
import etl

RESULTS_JSON = RESULTS_DIR / "jit.json"
TIERED = " -XX:TieredStopAtLevel=4 -XX:CICompilerCount=2"  # tiered compilation, both compilers
TIERED_4X = (
    "-XX:Tier4InvocationThreshold=20000",
    "-XX:Tier4MinInvocationThreshold=2400",
    "-XX:Tier4CompileThreshold=60000",
    "-XX:Tier4BackEdgeThreshold=160000",
)
# C1 alone with one compiler thread is what the job gives a short run on a machine of
# etl.FEW_CORES cores, with two (this machine's default) what it gave before; flags set
# here override the job's own, as the later flag wins.
MODES = {
    "c1_one_thread": "-XX:TieredStopAtLevel=1 -XX:CICompilerCount=1",
    "c1_two_threads": "-XX:TieredStopAtLevel=1 -XX:CICompilerCount=2",
    "tiered": " ".join(etl.JIT_OPTIONS) + TIERED,
    # what the job gave a long run before: C2 at four times its default thresholds, not sixteen
    "tiered_4x": " ".join(TIERED_4X) + TIERED,
}
# the ratios recorded per size, when both modes ran: name -> (mode, over mode)
RATIOS = {
    "c1_over_tiered": ("c1_two_threads", "tiered"),
    "one_over_two_compiler_threads": ("c1_one_thread", "c1_two_threads"),
    "tiered_over_tiered_4x": ("tiered", "tiered_4x"),
}
DEFAULT_SIZES = "sample,100k,1M"
DEFAULT_REPEAT = 2


def mode_config(folder: Path, mode: str) -> Path:
    """dl.cfg with the mode's JIT flags last in the driver's Java options (its paths are overridden)."""
    path = folder / f"{mode}.cfg"
    text = (REPO / "dl.cfg").read_text()
    if etl.DRIVER_JAVA_OPTIONS in text:
        raise SystemExit(f"dl.cfg sets {etl.DRIVER_JAVA_OPTIONS}: the comparison would not be like with like")
    path.write_text(text.replace("[SPARK]", f"[SPARK]\n{etl.DRIVER_JAVA_OPTIONS} = {MODES[mode]}", 1))
    return path


def job_picks(size: int) -> str:
    """The mode etl.jit_options gives a run of this size on this machine."""
    if size >= etl.SHORT_RUN_INPUT_BYTES:
        return "tiered"
    return "c1_one_thread" if (os.cpu_count() or 1) <= etl.FEW_CORES else "c1_two_threads"


def input_of(size: str, seed: int) -> Path:
    if size == "sample":
        return SAMPLE_DIR
    events = parse_size(size)
    songs = max(1, events * SONGS_PER_MILLION_EVENTS // 1_000_000)
    data, _ = ensure_dataset(f"{size}-growing", songs, events, seed, songs_per_artist=MSD_SONGS_PER_ARTIST)
    return data


def save_results(results: dict, path: Path) -> int:
    """Write a comparison's results, with the load average it ended under."""
    results["load_avg_1m_after"] = os.getloadavg()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="sample and/or sizes of the growing series")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of: {', '.join(MODES)}")
    parser.add_argument("--results", type=Path, default=RESULTS_JSON, help="where the results go")
    args = parser.parse_args(argv)
    modes = {mode: MODES[mode] for mode in args.modes.split(",")}
    work = CACHE_DIR / "jit"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    configs = {mode: mode_config(work, mode) for mode in modes}
    command = ["bench/jit.py", *(argv if argv is not None else sys.argv[1:])]
    results = {
        "command": " ".join(command),
        "modes": modes,
        "short_run_input_bytes": etl.SHORT_RUN_INPUT_BYTES,
        "sizes": [],
    }
    for size in args.sizes.split(","):
        data = input_of(size, args.seed)
        listing = etl.list_local_input(str(data))
        runs: dict[str, list[dict]] = {mode: [] for mode in modes}
        for round_number in range(args.repeat):
            order = list(modes) if round_number % 2 == 0 else list(reversed(modes))
            for mode in order:
                output = work / "out"
                shutil.rmtree(output, ignore_errors=True)
                command = [PYTHON, str(ETL), "--config", str(configs[mode]), "--input", str(data)]
                runs[mode].append(run_monitored([*command, "--output", str(output)], work / f"{mode}.log"))
                cpu = runs[mode][-1]["jvm_cpu_s"]
                compilers = cpu.get("c1_compiler", 0.0) + cpu.get("c2_compiler", 0.0)
                print(
                    f"  {size:<7} {mode:<14} wall {runs[mode][-1]['wall_s']:6.1f} s, JVM CPU {cpu['total']:6.1f} s"
                    f" (compilers {compilers:5.1f}, tasks {cpu.get('tasks', 0.0):5.1f})",
                    flush=True,
                )
        fastest = {mode: best(mode_runs)["wall_s"] for mode, mode_runs in runs.items()}
        record = {
            "size": size,
            "input_bytes": etl.input_bytes(listing.files),
            "wall_s": fastest,
            "all_wall_s": {mode: [round(run["wall_s"], 2) for run in mode_runs] for mode, mode_runs in runs.items()},
            # the JVM's CPU seconds by thread kind (compilers, tasks, gc, other), every run
            "all_jvm_cpu_s": {mode: [run["jvm_cpu_s"] for run in mode_runs] for mode, mode_runs in runs.items()},
            "job_picks": job_picks(etl.input_bytes(listing.files)),
        }
        for name, (mode, over) in RATIOS.items():
            if mode in fastest and over in fastest:
                record[name] = fastest[mode] / fastest[over]
        results["sizes"].append(record)
        ratios = ", ".join(f"{name} {record[name]:.2f}" for name in RATIOS if name in record)
        print(f"{size}: {ratios}; the job picks {record['job_picks']}")
    return save_results(results, args.results)


if __name__ == "__main__":
    sys.exit(main())
