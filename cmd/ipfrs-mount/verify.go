package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

func verifyCommand() *command {
	var asJSON bool
	var s3 string
	return &command{
		name: "verify", args: "[--json] [--s3 URL]", help: "re-hash every stored block; list corrupt ones and exit non-zero",
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVar(&asJSON, "json", false, "print one JSON object at the end")
			fs.StringVar(&s3, "s3", "", "verify the S3 tier's bucket instead: every pack and block, and that every ref's blocks are there")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if s3 != "" {
				return a.s3Verify(ctx, s3, asJSON)
			}
			return a.verify(ctx, asJSON)
		},
	}
}

// verifyJSON is verify --json's output; its shape is stable.
type verifyJSON struct {
	Blocks     int      `json:"blocks"`     // blocks checked
	Corrupt    []string `json:"corrupt"`    // CIDs whose bytes do not match
	Unreadable []string `json:"unreadable"` // CIDs that could not be read
}

func (a *app) verify(ctx context.Context, asJSON bool) error {
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
	out := verifyJSON{Corrupt: []string{}, Unreadable: []string{}}
	// A block stored as a delta is rebuilt from its base: when it fails,
	// the base is named too (a damaged base fails all its deltas).
	baseNote := func(c cid.Cid) string {
		if b, ok, err := r.store.DeltaBase(ctx, c); err == nil && ok {
			return fmt.Sprintf(" (stored as a delta of %s)", b)
		}
		return ""
	}
	err = r.store.AllBlocks(ctx, func(c cid.Cid, data []byte, readErr error) error {
		n++
		prog.add(len(data))
		switch {
		case errors.Is(readErr, store.ErrCorrupt):
			bad++
			out.Corrupt = append(out.Corrupt, c.String())
			if !asJSON {
				fmt.Fprintf(a.stdout, "corrupt %s%s\n", c, baseNote(c))
			}
		case readErr != nil:
			bad++
			out.Unreadable = append(out.Unreadable, c.String())
			if !asJSON {
				fmt.Fprintf(a.stdout, "unreadable %s\n", c)
			}
		case unixfs.CheckHash(c, data) != nil:
			bad++
			out.Corrupt = append(out.Corrupt, c.String())
			if !asJSON {
				fmt.Fprintf(a.stdout, "corrupt %s%s\n", c, baseNote(c))
			}
		}
		return nil
	})
	prog.done()
	if err != nil {
		return err
	}
	if asJSON {
		out.Blocks = n
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintf(a.stdout, "%s\n", b)
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d blocks are corrupt", bad, n)
	}
	fmt.Fprintf(a.stderr, "verified %d blocks: all match their hashes\n", n)
	return nil
}
