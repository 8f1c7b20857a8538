package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// workTree returns the working tree: the mount daemon's, or one opened from
// the repo for this command (closed by done).
func (a *app) workTree(ctx context.Context, r *repo) (t *worktree.Tree, done func() error, err error) {
	if a.tree != nil {
		return a.tree, func() error { return nil }, nil
	}
	t, err = worktree.Open(ctx, r.store, worktree.Options{
		Layout: unixfs.DefaultLayout(), StagingDir: filepath.Join(r.path, "staging"), Logger: a.log})
	if err != nil {
		return nil, nil, err
	}
	return t, func() error { return t.Close(context.Background()) }, nil
}

func chunkerParams() string {
	l := unixfs.DefaultLayout()
	return fmt.Sprintf("%s/links-%d", l.Chunker, l.MaxLinks)
}

func commitCommand() *command {
	var msg, author string
	var allowEmpty bool
	return &command{
		name: "commit", args: "-m MSG [--author NAME] [--allow-empty]", help: "record the working tree as a new commit on the current branch",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVarP(&msg, "message", "m", "", "commit message")
			fs.StringVar(&author, "author", "", "author (default $USER)")
			fs.BoolVar(&allowEmpty, "allow-empty", false, "commit even when the tree is unchanged")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if msg == "" {
				return errors.New("a message is required (-m)")
			}
			if author == "" {
				author = os.Getenv("USER")
			}
			r, err := a.openRepo()
			if err != nil {
				return err
			}
			defer r.close()
			c, err := a.commit(ctx, r, versions.Commit{Message: msg, Author: author}, allowEmpty)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, c.CID)
			return nil
		},
	}
}

// commit records the working tree with c's message and author.
func (a *app) commit(ctx context.Context, r *repo, c versions.Commit, allowEmpty bool) (versions.Commit, error) {
	t, done, err := a.workTree(ctx, r)
	if err != nil {
		return versions.Commit{}, err
	}
	root, err := t.Root(ctx)
	if err == nil {
		c.Tree, c.Chunker = root.CID, chunkerParams()
		c, err = versions.New(r.store).Create(ctx, c, allowEmpty)
	}
	if err2 := done(); err == nil {
		err = err2
	}
	if err == nil {
		a.republish(ctx, r)
	}
	return c, err
}

func logCommand() *command {
	var n int
	var asJSON bool
	return &command{
		name: "log", args: "[-n N] [--json] [REF]", help: "list commits from REF (default HEAD), newest first",
		flags: func(fs *pflag.FlagSet) {
			fs.IntVarP(&n, "max-count", "n", 0, "at most N commits")
			fs.BoolVar(&asJSON, "json", false, "print JSON lines")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			ref := "HEAD"
			if fs.NArg() > 1 {
				return errors.New("at most one REF")
			} else if fs.NArg() == 1 {
				ref = fs.Arg(0)
			}
			r, err := a.openRepoReadOnly()
			if err != nil {
				return err
			}
			defer r.close()
			h := versions.New(r.store)
			from, err := h.Resolve(ctx, ref)
			if err != nil {
				return err
			}
			count := 0
			return h.Log(ctx, from, func(c versions.Commit) error {
				if n > 0 && count == n {
					return versions.Stop
				}
				count++
				if asJSON {
					b, _ := json.Marshal(commitJSON(c))
					fmt.Fprintf(a.stdout, "%s\n", b)
				} else {
					msg, _, _ := strings.Cut(c.Message, "\n")
					fmt.Fprintf(a.stdout, "%s %s %s\n", c.CID, c.Time.UTC().Format(time.RFC3339), msg)
				}
				return nil
			})
		},
	}
}

// commitOut is the JSON shape of a commit in log --json and show --json.
type commitOut struct {
	CID     string   `json:"cid"`
	Tree    string   `json:"tree"`
	Parents []string `json:"parents"`
	Author  string   `json:"author"`
	Time    string   `json:"time"`
	Message string   `json:"message"`
	Chunker string   `json:"chunker"`
}

func commitJSON(c versions.Commit) commitOut {
	out := commitOut{CID: c.CID.String(), Tree: c.Tree.String(), Parents: []string{}, Author: c.Author,
		Time: c.Time.UTC().Format(time.RFC3339Nano), Message: c.Message, Chunker: c.Chunker}
	for _, p := range c.Parents {
		out.Parents = append(out.Parents, p.String())
	}
	return out
}

func showCommand() *command {
	var asJSON bool
	return &command{
		name: "show", args: "[--json] REF", help: "show one commit",
		flags: func(fs *pflag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") },
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() != 1 {
				return errors.New("want exactly one REF")
			}
			r, err := a.openRepoReadOnly()
			if err != nil {
				return err
			}
			defer r.close()
			h := versions.New(r.store)
			id, err := h.Resolve(ctx, fs.Arg(0))
			if err != nil {
				return err
			}
			c, err := h.Get(ctx, id)
			if err != nil {
				return err
			}
			o := commitJSON(c)
			if asJSON {
				b, _ := json.MarshalIndent(o, "", "  ")
				fmt.Fprintf(a.stdout, "%s\n", b)
				return nil
			}
			fmt.Fprintf(a.stdout, "commit  %s\ntree    %s\n", o.CID, o.Tree)
			for _, p := range o.Parents {
				fmt.Fprintf(a.stdout, "parent  %s\n", p)
			}
			fmt.Fprintf(a.stdout, "author  %s\ndate    %s\nchunker %s\n\n    %s\n", o.Author, o.Time, o.Chunker,
				strings.ReplaceAll(o.Message, "\n", "\n    "))
			return nil
		},
	}
}

// refCommand is branch or tag: list, create at REF (default HEAD), delete.
func refCommand(kind, help string) *command {
	var del string
	return &command{
		name: kind, args: "[NAME [REF]] [-d NAME]", help: help,
		flags: func(fs *pflag.FlagSet) { fs.StringVarP(&del, "delete", "d", "", "delete NAME") },
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			readOnly := del == "" && fs.NArg() == 0
			var r *repo
			var err error
			if readOnly {
				r, err = a.openRepoReadOnly()
			} else {
				r, err = a.openRepo()
			}
			if err != nil {
				return err
			}
			defer r.close()
			h := versions.New(r.store)
			list, set, remove := h.Branches, h.SetBranch, h.DeleteBranch
			if kind == "tag" {
				list, set, remove = h.Tags, h.SetTag, h.DeleteTag
			}
			switch {
			case del != "":
				if fs.NArg() != 0 {
					return errors.New("-d takes only NAME")
				}
				return remove(ctx, del)
			case fs.NArg() == 0:
				refs, err := list(ctx)
				if err != nil {
					return err
				}
				current := ""
				if kind == "branch" {
					current, _, _ = h.Head(ctx)
				}
				names := make([]string, 0, len(refs))
				for n := range refs {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					mark := " "
					if n == current {
						mark = "*"
					}
					fmt.Fprintf(a.stdout, "%s %s %s\n", mark, n, refs[n])
				}
				return nil
			case fs.NArg() <= 2:
				ref := "HEAD"
				if fs.NArg() == 2 {
					ref = fs.Arg(1)
				}
				if err := versions.ValidName(fs.Arg(0)); err != nil {
					return err
				}
				c, err := h.Resolve(ctx, ref)
				if err != nil {
					return err
				}
				return set(ctx, fs.Arg(0), c)
			default:
				return errors.New("want NAME [REF]")
			}
		},
	}
}

func diffCommand() *command {
	return &command{
		name: "diff", args: "[REF [REF]]", help: "list added (A), removed (D) and modified (M) paths: HEAD or REF against the working tree, or two REFs",
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() > 2 {
				return errors.New("at most two REFs")
			}
			r, err := a.openRepo()
			if err != nil {
				return err
			}
			defer r.close()
			h := versions.New(r.store)
			refs := fs.Args()
			if len(refs) == 0 {
				refs = []string{"HEAD"}
			}
			var trees [2]cid.Cid
			for i, ref := range refs {
				c, err := h.Resolve(ctx, ref)
				if err != nil {
					return err
				}
				cm, err := h.Get(ctx, c)
				if err != nil {
					return err
				}
				trees[i] = cm.Tree
			}
			if len(refs) == 1 {
				t, done, err := a.workTree(ctx, r)
				if err != nil {
					return err
				}
				root, err := t.Root(ctx)
				if err2 := done(); err == nil {
					err = err2
				}
				if err != nil {
					return err
				}
				trees[1] = root.CID
			}
			_, err = versions.Diff(ctx, r.store, trees[0], trees[1], func(c versions.Change) error {
				switch c.Kind {
				case versions.Added:
					fmt.Fprintf(a.stdout, "A %s (%d bytes)\n", c.Path, c.NewSize)
				case versions.Removed:
					fmt.Fprintf(a.stdout, "D %s (%d bytes)\n", c.Path, c.OldSize)
				default:
					fmt.Fprintf(a.stdout, "M %s (%d -> %d bytes)\n", c.Path, c.OldSize, c.NewSize)
				}
				return nil
			})
			return err
		},
	}
}
