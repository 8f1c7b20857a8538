#!/usr/bin/env bash
# The test command: set up (as scripts/setup.sh), then formatting, vet and
# every test. CI runs this through .ci/run with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
go=$(IPFRS_SETUP_NPM=1 ./scripts/setup.sh)
export GOFLAGS=-buildvcs=false
export PATH="$(dirname "$go"):$PATH"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1
fi
go vet ./...
go test -count=1 -timeout 30m ./...
