package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/pin"
	"github.com/ipfrs/ipfrs-mount/repository"
	"github.com/ipfrs/ipfrs-mount/store"
)

// repo is the repository a command works on: one it opened, or the mount
// daemon's, which the command must not close.
type repo struct {
	*repository.Repo
	path   string
	store  *store.Badger
	shared bool // owned by the mount daemon: close does nothing
}

func newRepo(r *repository.Repo, shared bool) *repo {
	return &repo{Repo: r, path: r.Dir(), store: r.Store(), shared: shared}
}

// repoDir resolves the repo directory: --repo, then $IPFRS_PATH, then ~/.ipfrs.
func (a *app) repoDir() (string, error) {
	if a.repoPath != "" {
		return a.repoPath, nil
	}
	if p := os.Getenv("IPFRS_PATH"); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no --repo given, $IPFRS_PATH unset and no home directory: %w", err)
	}
	return filepath.Join(home, ".ipfrs"), nil
}

// openRepo opens the repo for writing, creating it on first use.
func (a *app) openRepo() (*repo, error) { return a.open(false) }

// openRepoReadOnly opens the repo for commands that only read: Badger then
// neither replays nor truncates anything, so reading never changes the repo
// (a read-write open cuts a damaged value-log tail away).
func (a *app) openRepoReadOnly() (*repo, error) { return a.open(true) }

func (a *app) open(readOnly bool) (*repo, error) {
	if a.shared != nil {
		return a.shared, nil
	}
	dir, err := a.repoDir()
	if err != nil {
		return nil, err
	}
	r, err := repository.Open(dir, repository.Options{Logger: a.log, ReadOnly: readOnly})
	if err != nil {
		return nil, err
	}
	return newRepo(r, false), nil
}

func (r *repo) close() error {
	if r.shared {
		return nil
	}
	return r.Repo.Close()
}

// abs resolves a path given by the user against their working directory.
func (a *app) abs(p string) string {
	if filepath.IsAbs(p) || a.cwd == "" {
		return p
	}
	return filepath.Join(a.cwd, p)
}

// rootRecord notes content added to the repo, so that stat can tell the
// logical size of what the repo holds. It pins that content (see pin.Added).
type rootRecord = pin.Added

func (r *repo) recordRoot(ctx context.Context, c cid.Cid, rec rootRecord) error {
	return r.Pins().RecordAdded(ctx, c, rec)
}

func (r *repo) roots(ctx context.Context, fn func(c cid.Cid, rec rootRecord) error) error {
	return r.Pins().AddedRoots(ctx, fn)
}

// parseCIDPath splits "CID[/path]" (an optional /ipfs/ prefix is accepted).
func parseCIDPath(arg string) (cid.Cid, string, error) {
	s := arg
	if len(s) > 6 && s[:6] == "/ipfs/" {
		s = s[6:]
	}
	head, rest := s, ""
	for i := range len(s) {
		if s[i] == '/' {
			head, rest = s[:i], s[i+1:]
			break
		}
	}
	c, err := cid.Decode(head)
	if err != nil {
		return cid.Undef, "", fmt.Errorf("invalid CID %q: %w", head, err)
	}
	return c, rest, nil
}

// argErr names the user's argument in an error, and says so when a block
// is simply not in the repo.
func argErr(arg string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s: %w (not in this repo)", arg, err)
	}
	return fmt.Errorf("%s: %w", arg, err)
}
