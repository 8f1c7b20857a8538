// Package versions records the history of the working tree: commits
// (dag-cbor IPLD objects naming a UnixFS tree root), branches, tags and
// HEAD, and compares trees by CID.
//
// Commits are blocks in the store; branches, tags, HEAD and the index of
// every commit (the GC roots) are metadata keys under "versions/", changed
// together in one metadata transaction. Use one History per store: it
// serialises its own read-modify-write updates of the refs, and Batch holds
// that order across a caller's steps (read the working tree, then commit;
// replace the tree, then move HEAD).
package versions
