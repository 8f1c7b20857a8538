package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/gc"
	"github.com/ipfrs/ipfrs-mount/s3tier"
)

type gcFlags struct {
	dryRun, asJSON, quiet bool
	minAge, prune         time.Duration
	targetSize            string
	s3                    string
	s3Grace               time.Duration
}

func gcCommand() *command {
	f := &gcFlags{}
	return &command{
		name: "gc", args: "[--dry-run] [--min-age D] [--target-size SIZE] [--prune-commits-older-than D] [--json]",
		help: "delete blocks no pin, commit, add record or working-tree file needs, and return their disk space",
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVar(&f.dryRun, "dry-run", false, "list what would be deleted and its size; delete nothing")
			fs.DurationVar(&f.minAge, "min-age", 0, "keep blocks written less than D ago")
			fs.StringVar(&f.targetSize, "target-size", "", "run only while the stored blocks exceed SIZE (e.g. 50GiB), oldest garbage first, until under it")
			fs.DurationVar(&f.prune, "prune-commits-older-than", 0, "let go of the trees of commits older than D that no branch, tag or HEAD points at (default: keep all history)")
			fs.BoolVar(&f.asJSON, "json", false, "print one JSON object")
			fs.BoolVarP(&f.quiet, "quiet", "q", false, "do not list blocks, only the summary")
			fs.StringVar(&f.s3, "s3", "", "collect the S3 tier's bucket instead (s3://BUCKET[/PREFIX][?endpoint=...]): remove packs no ref there needs; --min-age (default 1h there) keeps young packs")
			fs.DurationVar(&f.s3Grace, "s3-grace", s3GCGrace, "with --s3: how long packs stay condemned (writers see it and push their blocks again) before they go")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() != 0 {
				return fmt.Errorf("unexpected argument %q", fs.Arg(0))
			}
			if f.s3 != "" {
				minAge := f.minAge
				if !fs.Changed("min-age") {
					minAge = 0 // the tier's default
				} else if minAge == 0 {
					minAge = -1
				}
				return a.s3GC(ctx, f.s3, s3tier.CollectOptions{DryRun: f.dryRun, MinAge: minAge, Grace: f.s3Grace}, f.asJSON)
			}
			o := gc.Options{DryRun: f.dryRun, MinAge: f.minAge, PruneCommitsOlderThan: f.prune}
			if f.targetSize != "" {
				n, err := humanize.ParseBytes(f.targetSize)
				if err != nil || n == 0 {
					return fmt.Errorf("bad --target-size %q", f.targetSize)
				}
				o.TargetSize = int64(n)
			}
			return a.gc(ctx, o, f)
		},
	}
}

// gcJSON is the shape of gc --json: the report, plus the blocks removed
// (or, with --dry-run, to remove) unless --quiet.
type gcJSON struct {
	gc.Report
	RemovedBlocks []gcBlock `json:"removed_blocks"`
}

type gcBlock struct {
	CID  string `json:"cid"`
	Size int64  `json:"size"`
}

func (a *app) gc(ctx context.Context, o gc.Options, f *gcFlags) error {
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	defer r.close()
	out := gcJSON{RemovedBlocks: []gcBlock{}}
	verb := "removed"
	if o.DryRun {
		verb = "would remove"
	}
	if !f.quiet {
		o.Removed = func(c cid.Cid, size int64) {
			if f.asJSON {
				out.RemovedBlocks = append(out.RemovedBlocks, gcBlock{c.String(), size})
				return
			}
			fmt.Fprintf(a.stdout, "%s %s %d\n", verb, c, size)
		}
	}
	rep, err := r.GC(ctx, o)
	if err != nil {
		return err
	}
	if f.asJSON {
		out.Report = rep
		b, _ := json.Marshal(out)
		fmt.Fprintf(a.stdout, "%s\n", b)
		return nil
	}
	if rep.Skipped {
		fmt.Fprintf(a.stderr, "gc: %s stored, under the target: nothing to do\n", humanize.IBytes(uint64(rep.BlockBytes)))
		return nil
	}
	fmt.Fprintf(a.stderr, "gc: %s %d of %d blocks (%s); kept %d reachable, %d young, %d in use by writers; disk %s -> %s\n",
		verb, rep.Removed, rep.Blocks, humanize.IBytes(uint64(rep.RemovedBytes)), rep.Marked, rep.KeptYoung, rep.KeptLive,
		humanize.IBytes(uint64(rep.DiskBefore)), humanize.IBytes(uint64(rep.DiskAfter)))
	return nil
}
