package fusefs

import (
	"os"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ipfrs/ipfrs-mount/hottier"
)

// passthroughSelfTest has the hot tier check once that this kernel takes
// backing files from this server (the policy itself is in hottier).
func passthroughSelfTest(h *hottier.Hot, server *fuse.Server) {
	h.SelfTest(func(f *os.File) error {
		id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
		if errno != 0 {
			return errno
		}
		server.UnregisterBackingFd(id)
		return nil
	})
}
