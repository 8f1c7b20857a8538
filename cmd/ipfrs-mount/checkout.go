package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// withTree runs fn with the history and the working tree, opened for
// writing when unmounted.
func (a *app) withTree(ctx context.Context, fn func(r *repo, h *versions.History, t *worktree.Tree) error) error {
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	defer r.close()
	t, done, err := a.workTree(ctx, r)
	if err != nil {
		return err
	}
	err = fn(r, versions.New(r.store), t)
	if err2 := done(); err == nil {
		err = err2
	}
	return err
}

// treeOf returns the tree of the commit ref names.
func treeOf(ctx context.Context, h *versions.History, ref string) (commit, tree cid.Cid, err error) {
	c, err := h.Resolve(ctx, ref)
	if err != nil {
		return cid.Undef, cid.Undef, err
	}
	cm, err := h.Get(ctx, c)
	return c, cm.Tree, err
}

// requireClean refuses when the working tree differs from HEAD's commit.
func requireClean(ctx context.Context, h *versions.History, t *worktree.Tree) error {
	root, err := t.Root(ctx)
	if err != nil {
		return err
	}
	_, head, err := h.Head(ctx)
	if err != nil {
		return err
	}
	if !head.Defined() {
		if ents, _ := t.Readdir(worktree.RootIno); len(ents) == 0 {
			return nil
		}
		return errors.New("the working tree has uncommitted changes (no commit yet); commit them or use --discard-changes")
	}
	cm, err := h.Get(ctx, head)
	if err != nil {
		return err
	}
	if !cm.Tree.Equals(root.CID) {
		return errors.New("the working tree has uncommitted changes; commit them or use --discard-changes")
	}
	return nil
}

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
			name := fs.Arg(0)
			return a.withTree(ctx, func(r *repo, h *versions.History, t *worktree.Tree) error {
				branches, err := h.Branches(ctx)
				if err != nil {
					return err
				}
				head, ok := branches[name]
				if !ok {
					return fmt.Errorf("no branch %q (create it with: branch %s)", name, name)
				}
				if !discard {
					if err := requireClean(ctx, h, t); err != nil {
						return err
					}
				}
				cm, err := h.Get(ctx, head)
				if err != nil {
					return err
				}
				if _, err := t.Replace(ctx, "", cm.Tree); err != nil {
					return err
				}
				if err := h.SetHead(ctx, name); err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "switched to %s (%s)\n", name, head)
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
			return a.withTree(ctx, func(r *repo, h *versions.History, t *worktree.Tree) error {
				c, tree, err := treeOf(ctx, h, fs.Arg(0))
				if err != nil {
					return err
				}
				if _, err := t.Replace(ctx, "", tree); err != nil {
					return err
				}
				branch, _, err := h.Head(ctx)
				if err != nil {
					return err
				}
				return h.SetBranch(ctx, branch, c)
			})
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
			return a.withTree(ctx, func(r *repo, h *versions.History, t *worktree.Tree) error {
				_, tree, err := treeOf(ctx, h, source)
				if err != nil {
					return err
				}
				// Resolve every path before changing anything.
				subs := make([]cid.Cid, fs.NArg())
				for i, p := range fs.Args() {
					if subs[i], err = unixfs.Resolve(ctx, r.store, tree, p); err != nil {
						return fmt.Errorf("%s is not in %s: %w", p, source, err)
					}
				}
				for i, p := range fs.Args() {
					if _, err := t.Replace(ctx, p, subs[i]); err != nil {
						return fmt.Errorf("%s: %w", p, err)
					}
				}
				return nil
			})
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
			return a.withTree(ctx, func(r *repo, h *versions.History, t *worktree.Tree) error {
				c, tree, err := treeOf(ctx, h, fs.Arg(0))
				if err != nil {
					return err
				}
				branch, head, err := h.Head(ctx)
				if err != nil {
					return err
				}
				if head.Defined() {
					if up, err := h.IsAncestor(ctx, c, head); err != nil {
						return err
					} else if up {
						fmt.Fprintln(a.stderr, "already up to date")
						return nil
					}
					if ff, err := h.IsAncestor(ctx, head, c); err != nil {
						return err
					} else if !ff {
						return fmt.Errorf("%s and %s have diverged: only fast-forward merges are supported", branch, fs.Arg(0))
					}
				}
				if err := requireClean(ctx, h, t); err != nil {
					return err
				}
				if _, err := t.Replace(ctx, "", tree); err != nil {
					return err
				}
				if err := h.SetBranch(ctx, branch, c); err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "fast-forward %s to %s\n", branch, c)
				return nil
			})
		},
	}
}
