// Command memfs mounts an in-memory go-fuse filesystem with exactly the
// mount options of ipfrs-mount: the baseline that benchmarks divide by.
// Usage: memfs MOUNTPOINT (SIGINT/SIGTERM unmount).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ipfrs/ipfrs-mount/bench"
	"github.com/ipfrs/ipfrs-mount/fusefs"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: memfs MOUNTPOINT")
		os.Exit(2)
	}
	server, err := fusefs.MountNode(os.Args[1], bench.NewMemFS(), fusefs.MountOptions{ReadAheadKB: 16384})
	if err != nil {
		fmt.Fprintln(os.Stderr, "memfs:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; server.Unmount() }()
	server.Wait()
}
