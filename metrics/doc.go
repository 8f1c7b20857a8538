// Package metrics counts what one mount does (FUSE requests and their
// latency, bytes moved, block store traffic) in a Prometheus registry of its
// own, and serves it over HTTP with a health check.
package metrics
