// Package unixfs builds and reads IPFS UnixFS DAGs over a block store: files
// from a chunk stream (raw leaves, CIDv1, sha2-256, dag-pb internal nodes in
// Kubo's balanced layout), directories (basic and HAMT-sharded), symlinks,
// and a random-access file reader that caches decoded internal nodes.
package unixfs
