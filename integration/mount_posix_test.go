package integration

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkipped lists the posixtest cases that cannot say anything about our
// file system, with the reason.
var posixSkipped = map[string]string{
	// It takes a conflicting POSIX lock on a second descriptor of the same
	// process and expects EAGAIN, but POSIX locks belong to the process, so
	// the kernel grants it on any file system; go-fuse's own TestAll skips it.
	"FcntlFlockLocksFile": "conflicting lock from the same process cannot fail (go-fuse TestAll skips it too)",
}

// TestMountPosix runs go-fuse's POSIX conformance suite on the mounted
// working tree, every case in a fresh directory of its own. RenameOpenDir
// skips itself on the known go-fuse limitation (hanwen/go-fuse#55).
func TestMountPosix(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	mnt, stop := mountRepo(t, repo)

	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkipped[name]; ok {
				t.Skip(why)
			}
			dir := filepath.Join(mnt, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			posixtest.All[name](t, dir)
		})
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
