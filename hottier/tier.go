// Package hottier is the hot tier: flat copies of hot files on local disk,
// one file per content key (<dir>/<key>), within a size budget with
// least-recently-used eviction. A flat copy is what the kernel needs to
// pass reads and mmap of a FUSE file straight through to a backing file,
// and what a process can map to serve reads without a copy of its own.
//
// Files are written to a temporary name, synced and renamed, so a crash
// never leaves a partial copy under a key. Copies found in the directory
// when the tier opens are checked (by a function the caller gives) before
// they are used again.
package hottier

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	mmap "github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// ErrTooBig means a file does not fit in the tier's budget.
var ErrTooBig = errors.New("larger than the hot tier")

// Tier is a directory of flat copies.
type Tier struct {
	dir    string
	budget int64
	log    *slog.Logger

	mu       sync.Mutex
	entries  map[string]*entry
	lru      *list.List // of *entry, most recently used first
	used     int64
	building map[string]chan struct{}
	closed   bool
}

type entry struct {
	key      string
	size     int64
	elem     *list.Element
	verified bool // written by this process, or checked since it opened
	checking bool
	refs     int       // open Files
	mapping  mmap.MMap // shared by the open Files; nil until one maps it
	gone     bool      // evicted while open: unmapped with the last ref

	prefetching bool // a Prefetch pass is running
}

// Open opens (creating) the tier in dir with a budget in bytes. Copies
// left from an earlier run count against the budget and wait to be
// checked.
func Open(dir string, budget int64, log *slog.Logger) (*Tier, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("hot tier: %w", err)
	}
	t := &Tier{dir: dir, budget: budget, log: log, entries: map[string]*entry{}, lru: list.New(), building: map[string]chan struct{}{}}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("hot tier: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".tmp-") { // a copy a crash interrupted
			os.Remove(filepath.Join(dir, name))
			continue
		}
		fi, err := de.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		e := &entry{key: name, size: fi.Size()}
		e.elem = t.lru.PushBack(e)
		t.entries[name] = e
		t.used += e.size
	}
	t.evictLocked(0)
	return t, nil
}

// Dir is where the copies are.
func (t *Tier) Dir() string { return t.dir }

// Stats is what the tier holds.
type Stats struct {
	Files       int
	Bytes       int64
	BudgetBytes int64
}

// Stats reports the tier's contents.
func (t *Tier) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Stats{Files: len(t.entries), Bytes: t.used, BudgetBytes: t.budget}
}

// Has reports whether key has a checked copy, and marks it used.
func (t *Tier) Has(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[key]
	if !ok || !e.verified {
		return false
	}
	t.lru.MoveToFront(e.elem)
	return true
}

// Check verifies, once, a copy found when the tier opened: check reads the
// open copy and returns an error if it is not the content of key; the copy
// is then deleted. It returns whether the copy can be used. Keys written by
// this process are good at once.
func (t *Tier) Check(ctx context.Context, key string, check func(ctx context.Context, f *os.File) error) bool {
	t.mu.Lock()
	e, ok := t.entries[key]
	if !ok || e.checking {
		t.mu.Unlock()
		return false
	}
	if e.verified {
		t.mu.Unlock()
		return true
	}
	e.checking = true
	t.mu.Unlock()
	f, err := os.Open(filepath.Join(t.dir, key))
	if err == nil {
		err = check(ctx, f)
		f.Close()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e.checking = false
	if err != nil {
		t.log.Warn("hot copy dropped", "key", key, "err", err)
		t.removeLocked(e)
		return false
	}
	e.verified = true
	return true
}

// Add writes key's content with fill (given a file to write from offset 0
// on) unless the tier already has it. Concurrent Adds of one key write it
// once.
func (t *Tier) Add(ctx context.Context, key string, size int64, fill func(ctx context.Context, f *os.File) error) error {
	if strings.ContainsAny(key, "/\x00") || key == "" || key[0] == '.' {
		return fmt.Errorf("hot tier: bad key %q", key)
	}
	if size > t.budget {
		return fmt.Errorf("hot tier: %d bytes: %w (%d bytes)", size, ErrTooBig, t.budget)
	}
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return errors.New("hot tier closed")
		}
		if e, ok := t.entries[key]; ok && e.verified {
			t.lru.MoveToFront(e.elem)
			t.mu.Unlock()
			return nil
		}
		wait, ok := t.building[key]
		if !ok {
			done := make(chan struct{})
			t.building[key] = done
			t.mu.Unlock()
			err := t.build(ctx, key, size, fill)
			t.mu.Lock()
			delete(t.building, key)
			close(done)
			t.mu.Unlock()
			return err
		}
		t.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// MinFreeBytes is the free space a copy must leave on the tier's file
// system: the hot tier is a cache, and must not take the space the store
// needs for writes.
const MinFreeBytes = 1 << 30

// ErrNoSpace means the file system has no room for a copy.
var ErrNoSpace = errors.New("not enough free space for a hot copy")

func (t *Tier) build(ctx context.Context, key string, size int64, fill func(ctx context.Context, f *os.File) error) error {
	var st unix.Statfs_t
	if err := unix.Statfs(t.dir, &st); err == nil && int64(st.Bavail)*st.Bsize < size+MinFreeBytes {
		return fmt.Errorf("hot tier: %s: %w", key, ErrNoSpace)
	}
	tmp, err := os.CreateTemp(t.dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("hot tier: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := fill(ctx, tmp); err != nil {
		return fmt.Errorf("hot tier: copy of %s: %w", key, err)
	}
	if fi, err := tmp.Stat(); err != nil || fi.Size() != size {
		return fmt.Errorf("hot tier: copy of %s is not %d bytes", key, size)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("hot tier: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("hot tier: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.entries[key]; ok { // an unchecked copy from before
		t.removeLocked(old)
	}
	t.evictLocked(size)
	if err := os.Rename(tmp.Name(), filepath.Join(t.dir, key)); err != nil {
		return fmt.Errorf("hot tier: %w", err)
	}
	ok = true
	e := &entry{key: key, size: size, verified: true}
	e.elem = t.lru.PushFront(e)
	t.entries[key] = e
	t.used += size
	return nil
}

// evictLocked removes least recently used copies until need more bytes
// fit. Open copies stay readable: their files are unlinked, and their
// mapping goes with their last File.
func (t *Tier) evictLocked(need int64) {
	for t.used+need > t.budget {
		back := t.lru.Back()
		if back == nil {
			return
		}
		t.removeLocked(back.Value.(*entry))
	}
}

func (t *Tier) removeLocked(e *entry) {
	if cur, ok := t.entries[e.key]; !ok || cur != e {
		return
	}
	delete(t.entries, e.key)
	t.lru.Remove(e.elem)
	t.used -= e.size
	if err := os.Remove(filepath.Join(t.dir, e.key)); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.log.Warn("hot tier: remove", "key", e.key, "err", err)
	}
	e.gone = true
	if e.refs == 0 && e.mapping != nil {
		e.mapping.Unmap()
		e.mapping = nil
	}
}

// Remove drops key's copy.
func (t *Tier) Remove(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.entries[key]; ok {
		t.removeLocked(e)
	}
}

// File is an open copy: an fd to hand to the kernel for passthrough, and
// a shared read-only mapping for reads served by the process.
type File struct {
	t *Tier
	e *entry
	f *os.File
}

// OpenFile opens key's checked copy; ok is false when there is none.
func (t *Tier) OpenFile(key string) (*File, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[key]
	if !ok || !e.verified {
		return nil, false, nil
	}
	f, err := os.Open(filepath.Join(t.dir, key))
	if err != nil {
		return nil, false, fmt.Errorf("hot tier: %w", err)
	}
	e.refs++
	t.lru.MoveToFront(e.elem)
	return &File{t: t, e: e, f: f}, true, nil
}

// Fd is the copy's file descriptor, valid until Close.
func (f *File) Fd() int { return int(f.f.Fd()) }

// Bytes maps the copy (once for all its Files) and returns the mapping,
// valid until Close.
func (f *File) Bytes() ([]byte, error) {
	f.t.mu.Lock()
	defer f.t.mu.Unlock()
	if f.e.mapping == nil && f.e.size > 0 {
		m, err := mmap.Map(f.f, mmap.RDONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("hot tier: map %s: %w", f.e.key, err)
		}
		f.e.mapping = m
	}
	return f.e.mapping, nil
}

// Close releases the File; the mapping goes with the last one of an
// evicted copy.
func (f *File) Close() error {
	f.t.mu.Lock()
	defer f.t.mu.Unlock()
	f.e.refs--
	if f.e.refs == 0 && f.e.gone && f.e.mapping != nil {
		f.e.mapping.Unmap()
		f.e.mapping = nil
	}
	return f.f.Close()
}

// Close stops new copies; open Files stay usable.
func (t *Tier) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}

// Prefetch reads the whole copy in the background, in order, so that the
// kernel's sequential read-ahead brings it into the page cache ahead of a
// reader that maps the file (whose faults read 128 KiB at a time). Reading
// it, rather than posix_fadvise(WILLNEED), fills the cache with large
// folios, which later reads copy out at full speed. One pass runs per copy
// at a time, and none when the copy looks cached already.
func (f *File) Prefetch() {
	t, e := f.t, f.e
	if f.cached() {
		return
	}
	t.mu.Lock()
	if e.prefetching {
		t.mu.Unlock()
		return
	}
	e.prefetching = true
	t.mu.Unlock()
	fd, err := unix.Dup(f.Fd())
	if err != nil {
		t.mu.Lock()
		e.prefetching = false
		t.mu.Unlock()
		return
	}
	go func() {
		defer unix.Close(fd)
		buf := make([]byte, 1<<20)
		for off := int64(0); off < e.size; {
			n, err := unix.Pread(fd, buf, off)
			if n <= 0 || err != nil {
				break
			}
			off += int64(n)
		}
		t.mu.Lock()
		e.prefetching = false
		t.mu.Unlock()
	}()
}

// cached reports whether 16 pages spread over the copy are all in the page
// cache (mincore on the shared mapping).
func (f *File) cached() bool {
	b, err := f.Bytes()
	if err != nil || len(b) == 0 {
		return false
	}
	page := os.Getpagesize()
	pages := (len(b) + page - 1) / page
	var vec [1]byte
	for i := range 16 {
		p := (pages - 1) * i / 15 * page
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[p])), uintptr(min(page, len(b)-p)), uintptr(unsafe.Pointer(&vec[0])))
		if errno != 0 || vec[0]&1 == 0 {
			return false
		}
	}
	return true
}
