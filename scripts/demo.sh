#!/usr/bin/env bash
# Set up (first run only) and run the demo; outputs go to demo_out/ (or the folder given as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/meddifffm demo -o "${1:-demo_out}" --progress bar
