// Package repository is an opened ipfrs repo: the block store, its pins,
// the one history, the working tree and, in the process serving a mount,
// the work that runs beside it (autocommit, collection, the control
// socket). It opens them in one order, closes them in the reverse order and
// owns and joins every goroutine it starts. Commands of the CLI, whether
// run in their own process or by the mount daemon for a control-socket
// client, go through the same methods.
package repository

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"

	"github.com/ipfrs/ipfrs-mount/pin"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// Files and directories of a repo.
const (
	BlocksDir  = "blocks"  // the Badger store
	StagingDir = "staging" // staging files of files being written
)

// Options configures Open.
type Options struct {
	Logger *slog.Logger
	// ReadOnly opens the store without its write lock, so that reading
	// never changes the repo; a store a crash left needing recovery is
	// opened writable instead (with a warning). A repo that does not exist
	// yet is created, so opened writable.
	ReadOnly bool
	// Compress is the working tree's option of that name.
	Compress bool
}

// Repo is an opened repo. Its methods are safe for concurrent use.
type Repo struct {
	dir     string
	log     *slog.Logger
	opts    Options
	store   *store.Badger
	history *versions.History
	pins    *pin.Set

	treeMu sync.Mutex
	tree   *worktree.Tree

	gcs gcRecord

	hookMu      sync.Mutex
	afterCommit []func(ctx context.Context, c versions.Commit)

	// The control socket, when served: stopped first by Close.
	controlMu sync.Mutex
	control   *controlServer

	// Background work: started by Go, cancelled and joined by Close before
	// anything it may use is closed.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	closeMu sync.Mutex
	closers []closer // opened after the store; closed in reverse order
	closed  bool
}

type closer struct {
	what  string
	close func() error
}

// Open opens (creating it on first use) the repo in dir.
func Open(dir string, o Options) (*Repo, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	blocks := filepath.Join(dir, BlocksDir)
	readOnly := o.ReadOnly
	if _, err := os.Stat(filepath.Join(blocks, "MANIFEST")); err != nil {
		readOnly = false // a new repo: create it
	}
	s, err := store.Open(blocks, store.Options{Logger: o.Logger, ReadOnly: readOnly})
	if readOnly && errors.Is(err, store.ErrNeedsRecovery) {
		o.Logger.Warn("repo was not closed cleanly; recovering it", "repo", dir)
		s, err = store.Open(blocks, store.Options{Logger: o.Logger})
	}
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Repo{dir: dir, log: o.Logger, opts: o, store: s, history: versions.New(s), pins: pin.New(s),
		bgCtx: ctx, bgCancel: cancel}, nil
}

// Dir is the repo's directory.
func (r *Repo) Dir() string { return r.dir }

// Store is the block store.
func (r *Repo) Store() *store.Badger { return r.store }

// History is the repo's one history: every commit and ref change of this
// process goes through it, which is what keeps them from colliding.
func (r *Repo) History() *versions.History { return r.history }

// Pins is the repo's pin set.
func (r *Repo) Pins() *pin.Set { return r.pins }

// Logger is the repo's logger.
func (r *Repo) Logger() *slog.Logger { return r.log }

// Tree returns the working tree, opening it on first use; Close closes it.
func (r *Repo) Tree(ctx context.Context) (*worktree.Tree, error) {
	r.treeMu.Lock()
	defer r.treeMu.Unlock()
	if r.tree != nil {
		return r.tree, nil
	}
	if r.isClosed() {
		return nil, ErrClosed
	}
	t, err := worktree.Open(ctx, r.store, worktree.Options{
		Layout:     unixfs.DefaultLayout(),
		StagingDir: filepath.Join(r.dir, StagingDir),
		Logger:     r.log,
		Compress:   r.opts.Compress,
	})
	if err != nil {
		return nil, err
	}
	r.tree = t
	return t, nil
}

// openTree returns the working tree when it is open, else nil.
func (r *Repo) openTree() *worktree.Tree {
	r.treeMu.Lock()
	defer r.treeMu.Unlock()
	return r.tree
}

// ErrClosed is returned by a Repo after Close.
var ErrClosed = errors.New("repo: closed")

// OnClose adds fn to what Close closes, before what was opened earlier:
// something built on the repo (a hot tier, a gateway) is closed before the
// working tree and the store it uses.
func (r *Repo) OnClose(what string, fn func() error) {
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	r.closers = append(r.closers, closer{what, fn})
}

// Go runs fn in a goroutine the repo owns: its context ends when Close
// starts, and Close waits for it before closing anything. A panic in fn is
// logged and ends only fn: the daemon goes on serving its mount, which a
// crash would leave dead ("transport endpoint is not connected").
func (r *Repo) Go(fn func(ctx context.Context)) {
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		defer func() {
			if p := recover(); p != nil {
				r.log.Error("background work panicked; it is stopped", "panic", p, "stack", string(debug.Stack()))
			}
		}()
		fn(r.bgCtx)
	}()
}

// StopBackground cancels the goroutines started by Go and waits for them.
// Close does it first; a daemon calls it earlier to stop them before it
// unmounts.
func (r *Repo) StopBackground() {
	r.bgCancel()
	r.bg.Wait()
}

func (r *Repo) isClosed() bool {
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	return r.closed
}

// Close stops the background work and waits for it, closes what OnClose
// registered in reverse order, then flushes and closes the working tree
// and closes the store. It returns the first error and closes the rest
// regardless.
func (r *Repo) Close() error {
	r.closeMu.Lock()
	if r.closed {
		r.closeMu.Unlock()
		return nil
	}
	r.closed = true
	closers := r.closers
	r.closers = nil
	r.closeMu.Unlock()

	r.stopControl()
	r.StopBackground()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i].close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the %s: %w", closers[i].what, err))
		}
	}
	r.treeMu.Lock()
	t := r.tree
	r.treeMu.Unlock()
	if t != nil {
		if err := t.Close(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("flushing the working tree: %w", err))
		}
	}
	if err := r.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the store: %w", err))
	}
	return errors.Join(errs...)
}
