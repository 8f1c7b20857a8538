package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"
)

func switchCommand() *command {
	var discard bool
	return &command{
		name: "switch", args: "BRANCH [--discard-changes]", help: "make the working tree the head of BRANCH",
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVar(&discard, "discard-changes", false, "drop uncommitted changes of the working tree")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() != 1 {
				return errors.New("want exactly one BRANCH")
			}
			return a.withRepo(func(r *repo) error {
				head, err := r.Switch(ctx, fs.Arg(0), discard)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "switched to %s (%s)\n", fs.Arg(0), head)
				return nil
			})
		},
	}
}

func resetCommand() *command {
	var hard bool
	return &command{
		name: "reset", args: "--hard REF", help: "move the current branch to REF and make the working tree its tree",
		flags: func(fs *pflag.FlagSet) { fs.BoolVar(&hard, "hard", false, "also replace the working tree (required)") },
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if !hard || fs.NArg() != 1 {
				return errors.New("only `reset --hard REF` is supported")
			}
			return a.withRepo(func(r *repo) error { return r.Reset(ctx, fs.Arg(0)) })
		},
	}
}

func restoreCommand() *command {
	var source string
	return &command{
		name: "restore", args: "--source REF PATH...", help: "bring files or directories (paths from the tree's root) back from a commit",
		flags: func(fs *pflag.FlagSet) { fs.StringVar(&source, "source", "", "the commit to restore from") },
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if source == "" || fs.NArg() == 0 {
				return errors.New("want --source REF and at least one PATH")
			}
			return a.withRepo(func(r *repo) error { return r.Restore(ctx, source, fs.Args()) })
		},
	}
}

func mergeCommand() *command {
	return &command{
		name: "merge", args: "REF", help: "fast-forward the current branch to REF (diverged histories are refused)",
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() != 1 {
				return errors.New("want exactly one REF")
			}
			return a.withRepo(func(r *repo) error {
				res, err := r.Merge(ctx, fs.Arg(0))
				switch {
				case err != nil:
					return err
				case res.UpToDate:
					fmt.Fprintln(a.stderr, "already up to date")
				default:
					fmt.Fprintf(a.stderr, "fast-forward %s to %s\n", res.Branch, res.To)
				}
				return nil
			})
		},
	}
}

// withRepo runs fn with the repo opened for writing (the daemon's when
// mounted); closing a repo it opened flushes the working tree, and that
// error is fn's when fn had none.
func (a *app) withRepo(fn func(r *repo) error) error {
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	err = fn(r)
	if err2 := r.close(); err == nil {
		err = err2
	}
	return err
}
