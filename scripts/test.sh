#!/usr/bin/env bash
# The test command: set up (as scripts/setup.sh), then formatting, a tidy
# go.mod, vet, the unit tests under the race detector and the integration
# tests. CI runs this through .ci/run with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
go=$(./scripts/setup.sh)
export GOFLAGS=-buildvcs=false
export PATH="$(dirname "$go"):$PATH"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1
fi
if ! tidy=$(go mod tidy -diff); then
  echo "go mod tidy would change go.mod/go.sum:" >&2; echo "$tidy" >&2; exit 1
fi
go vet ./...
# Every package but integration/ under the race detector. integration/
# drives the binary in other processes, so -race there needs a race-built
# binary (IPFRS_TEST_RACE=1): the tests of the daemon's concurrency and
# lifecycle run that way. The whole suite (crash loops, disk full, load)
# runs on a normal build: the race-built daemon made these tests 4x slower
# (112 s against 27 s on a loaded 2-core machine).
go test -race -count=1 -timeout 30m $(go list ./... | grep -v '/integration$')
IPFRS_TEST_RACE=1 go test -count=1 -timeout 30m \
  -run 'TestConcurrentCommitsThroughTheMount|TestSIGTERMDuringWork|TestCommandsWhileMounted|TestVersionsMounted|TestDaemonStartStatusUnmount' \
  ./integration/
go test -count=1 -timeout 30m ./integration/
