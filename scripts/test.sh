#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, S3 and cluster tests included.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k songplays
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/python tools/fetch_s3a_jars.py --dest .jars
.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
