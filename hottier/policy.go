package hottier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// MinHotSize is the smallest file the hot tier takes on its own: below
// it, the page cache does as well.
const MinHotSize = 1 << 20

// Contents tells the policy what a file of the working tree holds: its
// flushed content, and whether the file is exactly that (worktree.Tree).
type Contents interface {
	Content(ino uint64) (c cid.Cid, size uint64, clean bool, err error)
}

// Hot is the policy of the hot tier: which files of the working tree get
// a flat copy, and when. It serves hot files from flat copies:
// through FUSE passthrough when the kernel lets this process register
// backing files, else from a shared read-only mapping. Files read whole
// are copied in the background; Warm copies one at once.
//
// The kernel requires every open of an inode to use the same mode, so the
// mode is chosen when an inode has no open handles and kept until its last
// one is released: a passthrough inode gets later read-only opens in
// passthrough too, and opens for writing with FOPEN_DIRECT_IO, so that
// their reads and writes reach the working tree (mappings of the file then
// still see the copy, the content as of the first open).
type Hot struct {
	tier *Tier
	tree Contents
	bs   unixfs.BlockViewer
	log  *slog.Logger

	passthrough bool // wanted; cleared by a failed self-test
	queue       chan cid.Cid

	mu    sync.Mutex
	modes map[uint64]*inodeMode
	wg    sync.WaitGroup
	stop  chan struct{}
}

type inodeMode struct {
	opens int
	pt    bool // opened in passthrough mode
	stale bool // a writer opened it since: new opens read through the daemon
}

// NewHot serves the tree's hot files from tier; passthrough false forces
// the mapping.
func NewHot(tier *Tier, tree Contents, bs unixfs.BlockViewer, passthrough bool, log *slog.Logger) *Hot {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Hot{tier: tier, tree: tree, bs: bs, log: log, passthrough: passthrough,
		queue: make(chan cid.Cid, 16), modes: map[uint64]*inodeMode{}, stop: make(chan struct{})}
	h.wg.Add(1)
	go h.promoter()
	return h
}

// Close stops background copies.
func (h *Hot) Close() {
	close(h.stop)
	h.wg.Wait()
	h.tier.Close()
}

// Stats reports what the tier holds.
func (h *Hot) Stats() Stats { return h.tier.Stats() }

// Mode says how hot files are served: "passthrough" or "mmap".
func (h *Hot) Mode() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.passthrough {
		return "passthrough"
	}
	return "mmap"
}

// SelfTest checks once that the kernel takes backing files (go-fuse turns
// passthrough off for the whole mount, silently, after one failure):
// register registers a file of the tier's directory and unregisters it.
// Passthrough is off from then on if it fails.
func (h *Hot) SelfTest(register func(f *os.File) error) {
	if !h.passthrough {
		h.log.Info("hot tier serves through mmap (passthrough off by flag)")
		return
	}
	f, err := os.CreateTemp(h.tier.Dir(), ".tmp-selftest-")
	if err == nil {
		defer os.Remove(f.Name())
		defer f.Close()
		if err = register(f); err == nil {
			h.log.Info("hot tier serves through FUSE passthrough")
			return
		}
	}
	h.mu.Lock()
	h.passthrough = false
	h.mu.Unlock()
	h.log.Warn("FUSE passthrough unavailable; hot tier serves through mmap", "err", err)
}

// Open decides how a handle of ino is served. For a read-only open of a
// clean file with a checked copy on an idle inode it returns the copy;
// pt says whether to pass it through, directIO whether the kernel must
// send this handle's reads and writes to the daemon (an open of a
// passthrough inode that a writer has opened since).
func (h *Hot) Open(ctx context.Context, ino uint64, writable bool) (file *File, pt bool, directIO bool) {
	var f *File
	if !writable {
		f = h.copyOf(ctx, ino) // may wait for a flush: not under mu
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	md := h.modes[ino]
	if md == nil {
		md = &inodeMode{}
		h.modes[ino] = md
	}
	md.opens++
	if md.opens > 1 { // the inode's mode is set
		if f != nil {
			f.Close()
		}
		if !md.pt {
			return nil, false, false
		}
		if writable {
			md.stale = true
		}
		return nil, true, md.stale
	}
	if f == nil {
		return nil, false, false
	}
	md.pt = h.passthrough
	f.Prefetch()
	return f, md.pt, false
}

// copyOf opens the checked copy of the file's content, if the file is
// clean and the tier has one; a copy left by an earlier run gets checked in
// the background, for later opens.
func (h *Hot) copyOf(ctx context.Context, ino uint64) *File {
	c, size, clean, err := h.tree.Content(ino)
	if err != nil || !clean || size < MinHotSize {
		return nil
	}
	key := c.String()
	if !h.tier.Has(key) {
		go h.tier.Check(context.WithoutCancel(ctx), key, func(ctx context.Context, f *os.File) error {
			return checkCopy(ctx, h.bs, c, size, f)
		})
		return nil
	}
	f, ok, err := h.tier.OpenFile(key)
	if err != nil {
		h.log.Warn("hot copy", "cid", key, "err", err)
	}
	if !ok {
		return nil
	}
	return f
}

// Released ends one open of ino.
func (h *Hot) Released(ino uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if md := h.modes[ino]; md != nil {
		if md.opens--; md.opens <= 0 {
			delete(h.modes, ino)
		}
	}
}

// ReadWhole is called when a handle has read as many bytes as its file
// holds: the file's content is copied into the tier in the background.
func (h *Hot) ReadWhole(ino uint64) {
	c, size, clean, err := h.tree.Content(ino)
	if err != nil || !clean || size < MinHotSize || h.tier.Has(c.String()) {
		return
	}
	select {
	case h.queue <- c:
	default: // busy: a later read brings it back
	}
}

func (h *Hot) promoter() {
	defer h.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-h.stop; cancel() }()
	for {
		select {
		case <-h.stop:
			return
		case c := <-h.queue:
			if err := h.add(ctx, c); err != nil && !errors.Is(err, ErrTooBig) && !errors.Is(err, ErrNoSpace) && ctx.Err() == nil {
				h.log.Warn("hot copy", "cid", c, "err", err)
			}
		}
	}
}

// Warm copies the content of the file at ino into the tier now.
func (h *Hot) Warm(ctx context.Context, ino uint64) (cid.Cid, uint64, error) {
	c, size, clean, err := h.tree.Content(ino)
	if err != nil {
		return cid.Undef, 0, err
	}
	if !c.Defined() {
		return cid.Undef, 0, errors.New("empty file: nothing to warm")
	}
	if !clean {
		return cid.Undef, 0, errors.New("file is being written: close it first")
	}
	return c, size, h.add(ctx, c)
}

func (h *Hot) add(ctx context.Context, c cid.Cid) error {
	f, err := unixfs.OpenFile(ctx, h.bs, c)
	if err != nil {
		return err
	}
	return h.tier.Add(ctx, c.String(), int64(f.Size()), func(ctx context.Context, w *os.File) error {
		_, err := f.WriteTo(ctx, w, 2)
		return err
	})
}

// checkCopy hashes a copy found from an earlier run, leaf by leaf, against
// the file's DAG.
func checkCopy(ctx context.Context, bs unixfs.BlockViewer, c cid.Cid, size uint64, f *os.File) error {
	uf, err := unixfs.OpenFile(ctx, bs, c)
	if err != nil {
		return err
	}
	if uf.Size() != size {
		return fmt.Errorf("copy of %s: DAG holds %d bytes, not %d", c, uf.Size(), size)
	}
	leaves, err := uf.Leaves(ctx)
	if err != nil {
		return err
	}
	r := io.NewSectionReader(f, 0, int64(size))
	var buf []byte
	for _, l := range leaves {
		if uint64(cap(buf)) < l.Size {
			buf = make([]byte, l.Size)
		}
		buf = buf[:l.Size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("copy of %s: %w", c, err)
		}
		if err := unixfs.CheckHash(l.CID, buf); err != nil {
			return fmt.Errorf("copy of %s: %w", c, err)
		}
	}
	if n, _ := r.Read(make([]byte, 1)); n != 0 {
		return fmt.Errorf("copy of %s is longer than the file", c)
	}
	return nil
}
