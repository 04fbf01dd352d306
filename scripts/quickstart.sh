#!/usr/bin/env bash
# Set up cdiflow in ./.venv (once) and run the main job: `cdiflow quickstart`.
#
#   bash scripts/quickstart.sh [--workspace DIR] [--beamtime DIR ...]
#
# Arguments go to `cdiflow quickstart` (see `cdiflow quickstart --help`). Set
# CDIFLOW_TORCH to choose the torch requirement (default: torch==2.13.*, which on a
# machine with a local CPU-only wheel takes that one).
set -euo pipefail
cd "$(dirname "$0")/.."

export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"

if [ ! -x .venv/bin/cdiflow ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "${CDIFLOW_TORCH:-torch==2.13.*}"
    .venv/bin/python -m pip install --quiet -e . "${CDIFLOW_TORCH:-torch==2.13.*}"
fi

has_workspace=0
for arg in "$@"; do [ "$arg" = "--workspace" ] && has_workspace=1; done
if [ "$has_workspace" = 0 ]; then
    set -- --workspace workspace "$@"
fi
exec .venv/bin/cdiflow quickstart "$@"
