package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/repository"
	"github.com/ipfrs/ipfrs-mount/versions"
)

func chunkerParams() string { return repository.ChunkerParams() }

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
			return a.withRepo(func(r *repo) error {
				c, err := r.Commit(ctx, versions.Commit{Message: msg, Author: author}, allowEmpty)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, c.CID)
				return nil
			})
		},
	}
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
			h := r.History()
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
			h := r.History()
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
			h := r.History()
			list := h.Branches
			if kind == "tag" {
				list = h.Tags
			}
			switch {
			case del != "":
				if fs.NArg() != 0 {
					return errors.New("-d takes only NAME")
				}
				return r.DeleteRef(ctx, kind, del)
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
				return r.SetRef(ctx, kind, fs.Arg(0), ref)
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
			h := r.History()
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
				if trees[1], err = r.WorkingRoot(ctx); err != nil {
					return err
				}
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
