package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"
)

func statCommand() *command {
	var asJSON bool
	return &command{
		name: "stat", args: "[--json]", help: "show repo totals: blocks, logical and stored bytes, dedup ratio",
		flags: func(fs *pflag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") },
		run:   func(ctx context.Context, a *app, fs *pflag.FlagSet) error { return a.stat(ctx, asJSON) },
	}
}

// repoStat is the stat output; its JSON shape is stable.
type repoStat struct {
	Roots        int64   `json:"roots"`         // distinct roots added or imported
	Blocks       int64   `json:"blocks"`        // stored blocks
	LogicalBytes uint64  `json:"logical_bytes"` // sum of the roots' content sizes
	StoredBytes  int64   `json:"stored_bytes"`  // sum of stored block sizes
	DedupRatio   float64 `json:"dedup_ratio"`   // logical / stored
	DiskBytes    int64   `json:"disk_bytes"`    // the store's files on disk
}

func (a *app) stat(ctx context.Context, asJSON bool) error {
	r, err := a.openRepoReadOnly()
	if err != nil {
		return err
	}
	defer r.close()
	st, err := r.store.Stats(ctx)
	if err != nil {
		return err
	}
	out := repoStat{Blocks: st.Blocks, StoredBytes: st.BlockBytes, DiskBytes: st.DiskBytes}
	err = r.roots(ctx, func(_ cid.Cid, rec rootRecord) error {
		out.Roots++
		out.LogicalBytes += rec.Size
		return nil
	})
	if err != nil {
		return err
	}
	if out.StoredBytes > 0 {
		out.DedupRatio = float64(out.LogicalBytes) / float64(out.StoredBytes)
	}
	if asJSON {
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintf(a.stdout, "%s\n", b)
		return nil
	}
	fmt.Fprintf(a.stdout, "roots:         %d\n", out.Roots)
	fmt.Fprintf(a.stdout, "blocks:        %d\n", out.Blocks)
	fmt.Fprintf(a.stdout, "logical bytes: %d (%s)\n", out.LogicalBytes, humanize.IBytes(out.LogicalBytes))
	fmt.Fprintf(a.stdout, "stored bytes:  %d (%s)\n", out.StoredBytes, humanize.IBytes(uint64(out.StoredBytes)))
	fmt.Fprintf(a.stdout, "dedup ratio:   %.3f\n", out.DedupRatio)
	fmt.Fprintf(a.stdout, "disk bytes:    %d (%s)\n", out.DiskBytes, humanize.IBytes(uint64(out.DiskBytes)))
	return nil
}
