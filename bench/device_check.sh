#!/usr/bin/env bash
# Every GPU check in one command and one table (bench/device_check.py --help); --smoke: the same on the CPU, tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" bench/device_check.py "$@"
