#!/usr/bin/env bash
# Runs the reliability suite (integration TestReliability): fast (as in CI)
# or full, and prints its counts. Usage: scripts/reliability.sh [fast|full]
set -euo pipefail
cd "$(dirname "$0")/.."
go=$(./scripts/setup.sh)
export GOFLAGS=-buildvcs=false
export PATH="$(dirname "$go"):$PATH"
mode=${1:-fast}
report=$(mktemp)
trap 'rm -f "$report"' EXIT
IPFRS_RELIABILITY=$mode IPFRS_RELIABILITY_REPORT=$report \
  go test ./integration -run '^TestReliability$' -count=1 -timeout 60m -v
cat "$report"
