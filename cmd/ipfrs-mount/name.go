package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/names"
	"github.com/ipfrs/ipfrs-mount/remote"
	"github.com/ipfrs/ipfrs-mount/repository"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
)

func nameCommand() *command {
	var ttl, lifetime time.Duration
	rf := &remoteFlags{}
	return &command{
		name: "name", args: "publish [--ttl D] [--lifetime D] BRANCH | import NAME FILE | resolve [--remote URL[,URL...]] NAME",
		help: "IPNS: sign a record naming a branch's tree with the repo key (republished on each commit to it), keep a record signed elsewhere, or resolve a name",
		flags: func(fs *pflag.FlagSet) {
			fs.DurationVar(&ttl, "ttl", names.DefaultTTL, "publish: how long readers may cache the record")
			fs.DurationVar(&lifetime, "lifetime", names.DefaultLifetime, "publish: how long the record stays valid")
			rf.add(fs)
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			args := fs.Args()
			if len(args) == 0 {
				return errors.New("want publish, import or resolve")
			}
			switch sub, rest := args[0], args[1:]; {
			case sub == "publish" && len(rest) == 1:
				return a.namePublish(ctx, rest[0], ttl, lifetime)
			case sub == "import" && len(rest) == 2:
				return a.nameImport(ctx, rest[0], a.abs(rest[1]))
			case sub == "resolve" && len(rest) == 1:
				return a.nameResolve(ctx, rest[0], rf)
			default:
				return errors.New("usage: name publish [--ttl D] [--lifetime D] BRANCH | name import NAME FILE | name resolve [--remote URL] NAME")
			}
		},
	}
}

// namePublish points the repo's name at branch's tree.
func (a *app) namePublish(ctx context.Context, branch string, ttl, lifetime time.Duration) error {
	if ttl <= 0 || lifetime <= 0 {
		return errors.New("--ttl and --lifetime must be positive")
	}
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	defer r.close()
	branches, err := r.History().Branches(ctx)
	if err != nil {
		return err
	}
	head, ok := branches[branch]
	if !ok {
		return fmt.Errorf("no branch %q", branch)
	}
	commit, err := r.History().Get(ctx, head)
	if err != nil {
		return err
	}
	name, err := publishTree(ctx, r.Repo, branch, commit.Tree, ttl, lifetime)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "/ipns/%s /ipfs/%s\n", name, commit.Tree)
	return nil
}

// publishTree signs a record naming tree with the repo key (made on first
// use) and notes branch as the one the name follows.
func publishTree(ctx context.Context, r *repository.Repo, branch string, tree cid.Cid, ttl, lifetime time.Duration) (ipns.Name, error) {
	k, err := names.LoadKey(r.Dir(), true)
	if err != nil {
		return ipns.Name{}, err
	}
	if _, err := names.New(r.Store()).Publish(ctx, k, branch, tree, ttl, lifetime); err != nil {
		return ipns.Name{}, err
	}
	return k.Name(), nil
}

// republishOnCommit makes every commit on the branch the repo's name
// publishes (commit, autocommit, a tag of a changed tree) republish the
// name. A failure does not undo the commit: it is logged.
func republishOnCommit(r *repository.Repo) {
	r.AfterCommit(func(ctx context.Context, c versions.Commit) {
		branch, err := names.New(r.Store()).Branch(ctx)
		if err != nil || branch == "" {
			return
		}
		cur, head, err := r.History().Head(ctx)
		if err != nil || cur != branch || !head.Equals(c.CID) {
			return
		}
		if _, err := publishTree(ctx, r, branch, c.Tree, names.DefaultTTL, names.DefaultLifetime); err != nil {
			r.Logger().Warn("committed, but republishing the branch's IPNS name failed", "branch", branch, "err", err)
		}
	})
}

// nameImport keeps a record signed elsewhere, once its signature checks.
func (a *app) nameImport(ctx context.Context, arg, file string) error {
	name, err := ipns.NameFromString(strings.TrimPrefix(arg, "/ipns/"))
	if err != nil {
		return fmt.Errorf("%q is not an IPNS name: %w", arg, err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	defer r.close()
	rec, err := names.New(r.store).Put(ctx, name, raw)
	if err != nil {
		return err
	}
	v, _ := rec.Value()
	fmt.Fprintf(a.stdout, "/ipns/%s %s\n", name, v)
	return nil
}

func (a *app) nameResolve(ctx context.Context, arg string, rf *remoteFlags) error {
	r, err := a.open(!rf.enabled()) // a fetched record is kept: writable
	if err != nil {
		return err
	}
	defer r.close()
	bs, closeRemote, err := rf.open(r.store, a.log)
	if err != nil {
		return err
	}
	defer closeRemote()
	p, err := resolveIPNS(ctx, bs, strings.TrimPrefix(arg, "/ipns/"))
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, "/ipfs/"+p)
	return nil
}

// isIPNS tells an /ipns/NAME[/PATH] argument.
func isIPNS(arg string) bool { return strings.HasPrefix(arg, "/ipns/") }

// checkArg parses a CID[/PATH] or /ipns/NAME[/PATH] argument without
// resolving it.
func checkArg(arg string) error {
	if !isIPNS(arg) {
		_, _, err := parseCIDPath(arg)
		return err
	}
	head, _, _ := strings.Cut(strings.TrimPrefix(arg, "/ipns/"), "/")
	if _, err := ipns.NameFromString(head); err != nil {
		return fmt.Errorf("%q is not an IPNS name: %w", head, err)
	}
	return nil
}

// resolveIPNS turns NAME[/PATH] into CID[/PATH]: through the gateways
// when bs is remote (the record is verified against the name's key),
// else through the records kept in the repo (verified too).
func resolveIPNS(ctx context.Context, bs unixfs.BlockViewer, arg string) (string, error) {
	head, rest, _ := strings.Cut(arg, "/")
	name, err := ipns.NameFromString(head)
	if err != nil {
		return "", fmt.Errorf("%q is not an IPNS name: %w", head, err)
	}
	var value string
	switch s := bs.(type) {
	case *remote.Store:
		p, err := s.ResolveName(ctx, name)
		if err != nil {
			return "", err
		}
		value = p.String()
	case *store.Badger:
		raw, err := names.New(s).Get(ctx, name)
		if err != nil {
			return "", fmt.Errorf("%w (with --remote URL the name is resolved by the gateways)", err)
		}
		_, p, err := names.Verify(name, raw)
		if err != nil {
			return "", err
		}
		value = p.String()
	default:
		return "", fmt.Errorf("/ipns/%s: no records here", name)
	}
	if !strings.HasPrefix(value, "/ipfs/") {
		return "", fmt.Errorf("/ipns/%s names %s: only /ipfs/ values are followed", name, value)
	}
	out := strings.TrimPrefix(value, "/ipfs/")
	if rest != "" {
		out = strings.TrimSuffix(out, "/") + "/" + rest
	}
	return out, nil
}
