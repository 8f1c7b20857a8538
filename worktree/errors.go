package worktree

import "errors"

// Errors of namespace operations; fusefs maps them to errno values.
var (
	ErrNotExist     = errors.New("no such file or directory")
	ErrExist        = errors.New("file exists")
	ErrNotDir       = errors.New("not a directory")
	ErrIsDir        = errors.New("is a directory")
	ErrNotEmpty     = errors.New("directory not empty")
	ErrInvalid      = errors.New("invalid argument")
	ErrPermission   = errors.New("operation not permitted")
	ErrNoAttr       = errors.New("no such attribute")
	ErrNotSupported = errors.New("operation not supported")
	ErrNameTooLong  = errors.New("file name too long")
	ErrRange        = errors.New("result too large")
)

func isNotExist(err error) bool { return errors.Is(err, ErrNotExist) }
