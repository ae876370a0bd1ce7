"""Time the whole job on udacity-full, s3a:// in -> s3a:// out, against a local moto S3 server,
and count its S3 requests by kind (whole run, input bucket, output bucket, per written file).

    .venv/bin/python bench/s3_udacity_full.py               # through the counting proxy
    .venv/bin/python bench/s3_udacity_full.py --no-proxy    # wall time without the proxy hop
    .venv/bin/python bench/s3_udacity_full.py --etl OLD/etl.py --json bench/results/s3_udacity_full.json --label before

The input is uploaded first (not timed with the job); the job is `python etl.py --config
dl.cfg --report FILE` with the jars of jars.txt in [SPARK] spark.jars, exactly as a user runs it.
With --label, --json keeps one entry per label in the file (e.g. before/after a change of etl.py).
The 1-minute load average is sampled while the job runs: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from infra import CountingProxy, s3a_jar_paths, start_s3_server  # noqa: E402

DEFAULT_INPUT = REPO.parent / "shared" / "data" / "udacity-full"
TARGET_SECONDS = 240
TARGET_REQUESTS_PER_FILE = 8
LOAD_SAMPLE_S = 2.0


def write_config(path: Path, input_uri: str, output_uri: str, endpoint: str, jars: list[Path]) -> None:
    path.write_text(
        "[AWS]\nAWS_ACCESS_KEY_ID = AKIABENCHMARK0000001\nAWS_SECRET_ACCESS_KEY = bench-secret\n"
        "AWS_SESSION_TOKEN =\n\n"
        f"[PATHS]\nINPUT_DATA = {input_uri}\nOUTPUT_DATA = {output_uri}\n\n"
        f"[SPARK]\nspark.jars = {','.join(str(jar) for jar in jars)}\n\n"
        f"[S3]\nENDPOINT = {endpoint}\nPATH_STYLE_ACCESS = true\n"
    )


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="local input root to upload")
    parser.add_argument("--no-proxy", action="store_true", help="talk to moto directly (no request counts)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--label", help="store the figures under this key of the --json file (others kept)")
    parser.add_argument("--etl", type=Path, default=REPO / "etl.py", help="the etl.py to run (default: this repo's)")
    args = parser.parse_args()
    if not (args.input / "song_data").is_dir():
        print(f"error: {args.input} has no song_data/", file=sys.stderr)
        return 2
    jars = s3a_jar_paths()
    tag = uuid.uuid4().hex[:8]
    in_bucket, out_bucket = f"bench-in-{tag}", f"bench-out-{tag}"
    with start_s3_server() as server, tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        began = time.monotonic()
        uploaded = server.upload_tree(args.input, in_bucket, "data")
        upload_s = time.monotonic() - began
        server.create_bucket(out_bucket)
        proxy = None if args.no_proxy else CountingProxy(server.endpoint).start()
        endpoint = proxy.endpoint if proxy else server.endpoint
        cfg, report = Path(tmp) / "dl.cfg", Path(tmp) / "report.json"
        write_config(cfg, f"s3a://{in_bucket}/data", f"s3a://{out_bucket}/lake", endpoint, jars)
        command = [sys.executable, str(args.etl.resolve()), "--config", str(cfg), "--report", str(report)]
        loads: list[float] = []
        done = threading.Event()

        def sample_load() -> None:
            while not done.wait(LOAD_SAMPLE_S):
                loads.append(os.getloadavg()[0])

        uptime_before = uptime()
        sampler = threading.Thread(target=sample_load, daemon=True)
        sampler.start()
        began = time.monotonic()
        proc = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp)
        job_s = time.monotonic() - began
        done.set()
        uptime_after = uptime()
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
            return 1
        pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=out_bucket, Prefix="lake/")
        written = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        figures = {
            "command": " ".join(command),
            "input_files_uploaded": uploaded,
            "upload_seconds": round(upload_s, 1),
            "job_seconds": round(job_s, 1),
            "job_stage_seconds": json.loads(report.read_text())["seconds"],
            "tables": json.loads(report.read_text())["tables"],
            "songplays_matched": json.loads(report.read_text())["songplays_matched"],
            "objects_written": len(written),
            "uptime_before": uptime_before,
            "uptime_after": uptime_after,
            "load_1min_during_job": {
                "min": min(loads, default=None),
                "mean": round(sum(loads) / len(loads), 2) if loads else None,
                "max": max(loads, default=None),
            },
            "through_proxy": proxy is not None,
        }
        if proxy is not None:
            whole = dict(sorted(proxy.snapshot().items()))
            writes = proxy.bucket_counts(out_bucket)
            figures.update(
                requests_whole_run=whole,
                requests_input_bucket=proxy.bucket_counts(in_bucket),
                requests_output_bucket=writes,
                requests_per_written_file=round(sum(writes.values()) / max(len(written), 1), 2),
                whole_run_requests_per_written_file=round(sum(whole.values()) / max(len(written), 1), 2),
                copy_requests=whole.get("COPY", 0) + whole.get("COPY_PART", 0),
            )
            proxy.stop()
        text = json.dumps(figures, indent=2)
        print(text)
        if args.json and args.label:
            kept = json.loads(args.json.read_text()) if args.json.is_file() else {}
            kept[args.label] = figures
            args.json.write_text(json.dumps(kept, indent=2) + "\n")
        elif args.json:
            args.json.write_text(text + "\n")
        within = job_s <= TARGET_SECONDS and figures.get("requests_per_written_file", 0) <= TARGET_REQUESTS_PER_FILE
        print(f"targets (<= {TARGET_SECONDS} s, <= {TARGET_REQUESTS_PER_FILE} requests/file, no COPY):", end=" ")
        print("met" if within and not figures.get("copy_requests") else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
