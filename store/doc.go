// Package store keeps content-addressed blocks in an embedded Badger v4
// database, keyed by multihash so that every CID of the same bytes shares one
// stored copy, plus a small metadata keyspace for the repo's own records.
package store
