package fusefs

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"
	"golang.org/x/sys/unix"

	"github.com/ipfrs/ipfrs-mount/prefetch"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// MountOptions configures Mount.
type MountOptions struct {
	// History and Blocks serve .versions; without History there is no
	// .versions directory.
	History History
	Blocks  unixfs.BlockViewer
	// Store serves the listing of .blocks and protects DAGs open under
	// .ipfs and .versions from garbage collection; may be nil.
	Store *store.Badger

	AllowOther bool
	Debug      bool
	// ReadAheadKB is written to the mount's bdi read_ahead_kb (0 leaves the
	// kernel's 128 KiB).
	ReadAheadKB int
	Logger      *slog.Logger
	// FsName is the mount's source in /proc/self/mountinfo and df (default
	// "ipfrs"); the CLI names the repo there.
	FsName string
	// Observer, if set, sees every request (metrics).
	Observer Observer
	// Prefetch, if set, reads ahead of the readers of open files.
	Prefetch *prefetch.Prefetcher
	// Hot, if set, serves hot files from flat copies.
	Hot *Hot
}

// History is the repo's history as .versions serves it. It must be the
// repo's one history, so that a tag made by mkdir is in step with every
// other commit and ref change.
type History interface {
	Head(ctx context.Context) (branch string, commit cid.Cid, err error)
	Get(ctx context.Context, c cid.Cid) (versions.Commit, error)
	Log(ctx context.Context, from cid.Cid, fn func(versions.Commit) error) error
	Branches(ctx context.Context) (map[string]cid.Cid, error)
	Tags(ctx context.Context) (map[string]cid.Cid, error)
	Commits(ctx context.Context, fn func(cid.Cid) error) error
	// TagTree tags the working tree as name, committing it first when it
	// changed since HEAD's commit, and returns the tagged commit.
	TagTree(ctx context.Context, name string) (cid.Cid, error)
}

// Mount serves tree at mountpoint and returns once the mount answers. The
// caller waits on the server and unmounts it.
func Mount(mountpoint string, tree *worktree.Tree, o MountOptions) (*fuse.Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	m := &mountState{tree: tree, history: o.History, blocks: o.Blocks, store: o.Store, log: o.Logger,
		prefetch: o.Prefetch, hot: o.Hot, headerSlots: make(chan struct{}, 2)}
	root := &Node{tree: tree, log: o.Logger, m: m}
	server, err := MountNode(mountpoint, root, o)
	if err != nil {
		return nil, err
	}
	if o.Hot != nil {
		o.Hot.selfTest(server)
	}
	// After switch, reset or restore, the kernel must look the changed
	// names up again.
	tree.OnReplace(func(names []string) {
		for _, name := range names {
			root.NotifyEntry(name)
		}
	})
	return server, nil
}

// MountNode mounts any go-fuse node tree with the options the working tree
// uses; benchmarks mount their in-memory baseline through it, so that both
// sides of a comparison run with the same settings.
func MountNode(mountpoint string, root fs.InodeEmbedder, o MountOptions) (*fuse.Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	entry, attr, neg := entryTimeout, attrTimeout, negativeTimeout
	opts := &fs.Options{
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: worktree.RootIno},
		MountOptions: fuse.MountOptions{
			FsName:               cmp.Or(o.FsName, "ipfrs"),
			Name:                 "ipfrs",
			AllowOther:           o.AllowOther,
			DirectMount:          os.Geteuid() == 0,
			Options:              []string{"default_permissions"},
			MaxWrite:             1 << 20,
			MaxBackground:        64,
			IgnoreSecurityLabels: true,
			DisableSplice:        true, // measured slower (go-fuse ab014071), and it logs per read
			Debug:                o.Debug,
		},
	}
	var raw fuse.RawFileSystem = fs.NewNodeFS(root, opts)
	if o.Observer != nil {
		raw = observedFS{raw, o.Observer}
	}
	server, err := fuse.NewServer(raw, mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	if o.ReadAheadKB > 0 {
		if err := setReadAhead(mountpoint, o.ReadAheadKB); err != nil {
			o.Logger.Warn("could not raise readahead", "err", err)
		}
	}
	return server, nil
}

// mountState is what every node of one mount shares.
type mountState struct {
	tree     *worktree.Tree
	history  History
	blocks   unixfs.BlockViewer
	store    *store.Badger
	log      *slog.Logger
	prefetch *prefetch.Prefetcher // nil: no read-ahead of our own
	hot      *Hot                 // nil: no hot tier

	headerSlots chan struct{} // bounds reads of commit files' headers in flight
}

// openStream starts the read-ahead of an open file (nil without a
// prefetcher). groups lists its tensors, if it has any.
func (m *mountState) openStream(src prefetch.Source, size int64, groups func() []prefetch.Range) *prefetch.Stream {
	if m.prefetch == nil || size == 0 {
		return nil
	}
	return m.prefetch.Open(src, size, groups)
}

// setReadAhead raises the mount's readahead, which the FUSE INIT reply can
// only lower.
func setReadAhead(mountpoint string, kb int) error {
	var st syscall.Stat_t
	var err error
	for range 50 { // the mount may take a moment to show its own device
		if err = syscall.Stat(mountpoint, &st); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	dev := uint64(st.Dev)
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dev), unix.Minor(dev))
	return os.WriteFile(path, []byte(fmt.Sprint(kb)), 0)
}
