#!/usr/bin/env bash
# The main job: set up .venv, run the quick suite (CPU, a few minutes) and write the HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/precond-bench run "${SUITE:-quick}" --yes
.venv/bin/precond-bench report --out reports/latest/index.html
echo "report: $(pwd)/reports/latest/index.html"
