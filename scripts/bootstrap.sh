#!/usr/bin/env bash
# One command from a fresh Debian machine: install, build, then run
# bin/ipfrs-mount with the arguments given (e.g. `add -r DIR`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
exec bin/ipfrs-mount "$@"
