// Package worktree is the writable working tree behind the mount: a POSIX
// namespace of inodes (modes, owners, times, xattrs, hard links) persisted in
// the repo's metadata, whose file contents are UnixFS DAGs in the block
// store, and whose whole shape can be read back as one UnixFS DAG root.
//
// Writes land in a sparse staging file per inode and become a DAG when the
// file is flushed (close, fsync); a file's new content is published to the
// persisted namespace only after the blocks it names are durable, so a crash
// leaves every file with its old or its new content.
package worktree
