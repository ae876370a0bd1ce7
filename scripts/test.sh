#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, S3 and cluster tests included.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k songplays
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
# Two workers, each taking whole test files (module fixtures stay in one process);
# SPARKIFY_TEST_WORKERS=0 runs everything in this process.
.venv/bin/python -m pytest -n "${SPARKIFY_TEST_WORKERS:-2}" --dist loadfile "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
