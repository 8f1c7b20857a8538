// Package fusefs serves the working tree over FUSE with go-fuse v2. It only
// translates: every operation is carried out by worktree, and errors become
// errno values in one place (errno.go).
package fusefs
