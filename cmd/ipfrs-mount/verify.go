package main

import (
	"context"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/unixfs"
)

func verifyCommand() *command {
	return &command{
		name: "verify", args: "", help: "re-hash every stored block; list corrupt ones and exit non-zero",
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error { return a.verify(ctx) },
	}
}

func (a *app) verify(ctx context.Context) error {
	r, err := a.openRepoReadOnly()
	if err != nil {
		return err
	}
	defer r.close()
	st, err := r.store.Stats(ctx)
	if err != nil {
		return err
	}
	prog := a.newProgress(st.BlockBytes, "verifying")
	var n, bad int
	err = r.store.AllBlocks(ctx, func(c cid.Cid, data []byte, readErr error) error {
		n++
		prog.add(len(data))
		switch {
		case readErr != nil:
			bad++
			fmt.Fprintf(a.stdout, "unreadable %s\n", c)
		case unixfs.CheckHash(c, data) != nil:
			bad++
			fmt.Fprintf(a.stdout, "corrupt %s\n", c)
		}
		return nil
	})
	prog.done()
	if err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d blocks are corrupt", bad, n)
	}
	fmt.Fprintf(a.stderr, "verified %d blocks: all match their hashes\n", n)
	return nil
}
