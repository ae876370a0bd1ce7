#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, S3 and cluster tests included.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k songplays
#   bash scripts/test.sh --quick   only the tests of the rules, none that runs the whole job (table
#                                  rules, validation, merge rules, quality checks, configuration,
#                                  generator): a couple of minutes, run it after every change
set -euo pipefail
cd "$(dirname "$0")/.."
# Two workers, each taking whole test files (module fixtures that run the job stay in one
# process), longest first as tests/conftest.py orders them; the quick tests have none, so any
# worker takes any test.
selection=(--dist loadfile --no-loadscope-reorder)
if [ "${1:-}" = "--quick" ]; then
  shift
  selection=(--dist load -m "not job and not slow and not scale")
fi
bash scripts/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
# SPARKIFY_TEST_WORKERS=0 runs everything in this process.
.venv/bin/python -m pytest -n "${SPARKIFY_TEST_WORKERS:-2}" "${selection[@]}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
