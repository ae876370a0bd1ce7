#!/usr/bin/env bash
# Set up (first time only) and run the job. Without flags: the bundled sample_data/ into
# ./output, as dl.cfg says. Any etl.py flag can follow, e.g. --input DIR --output DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python etl.py "$@"
