package fusefs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	"github.com/ipfrs/ipfrs-mount/remote"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// toErrno maps an error from the layers below to the errno the kernel gets;
// it is the one place that does. Anything unexpected is EIO, and logged
// (to nowhere when log is nil): a corrupted or missing block must never be
// served as data.
func toErrno(log *slog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	table := []struct {
		err   error
		errno syscall.Errno
	}{
		{worktree.ErrNotExist, syscall.ENOENT},
		{worktree.ErrExist, syscall.EEXIST},
		{worktree.ErrNotDir, syscall.ENOTDIR},
		{worktree.ErrIsDir, syscall.EISDIR},
		{worktree.ErrNotEmpty, syscall.ENOTEMPTY},
		{worktree.ErrInvalid, syscall.EINVAL},
		{worktree.ErrPermission, syscall.EPERM},
		{worktree.ErrNoAttr, syscall.ENODATA},
		{worktree.ErrNotSupported, syscall.ENOTSUP},
		{worktree.ErrNameTooLong, syscall.ENAMETOOLONG},
		{worktree.ErrRange, syscall.ERANGE},
		{unixfs.ErrNoEntry, syscall.ENOENT},
		{unixfs.ErrNotDir, syscall.ENOTDIR},
	}
	for _, e := range table {
		if errors.Is(err, e.err) {
			return e.errno
		}
	}
	if errors.Is(err, remote.ErrUnavailable) {
		log.Error("no gateway gave the block", "op", op, "err", err)
		return syscall.EIO
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR // the kernel interrupted the request; callers retry
	}
	log.Error("I/O error", "op", op, "err", err)
	return syscall.EIO
}

// xattrReply answers a getxattr or listxattr with v: the size and ERANGE
// when dest is too small (a size-0 probe included), else the bytes.
func xattrReply(dest, v []byte) (uint32, syscall.Errno) {
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}
