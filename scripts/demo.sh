#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: `mmrlhf demo` on the embedded shapes world.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/mmrlhf demo "$@"
