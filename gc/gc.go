// Package gc reclaims the blocks that nothing needs: it marks everything
// reachable from the repo's roots (pins, the history, the working tree and
// the writers' temporary pins), deletes the rest in bounded batches while
// writers go on, and has the store return the space to the filesystem.
package gc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/pin"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
)

// Options tunes one run. The zero value collects everything unreachable
// and keeps all history.
type Options struct {
	// DryRun marks and lists what would be deleted, and deletes nothing.
	DryRun bool
	// MinAge keeps blocks written less than MinAge ago (to within the
	// store's 10-second clock).
	MinAge time.Duration
	// TargetSize, when positive, makes the run incremental: nothing happens
	// while the stored block bytes are at most TargetSize; above it, the
	// oldest unreachable blocks go until the store is under it.
	TargetSize int64
	// PruneCommitsOlderThan, when positive, lets go of the trees of commits
	// older than this that no branch, tag or HEAD points at directly. The
	// commits themselves stay, so history reads the same; their files can
	// no longer be checked out. Zero keeps all history.
	PruneCommitsOlderThan time.Duration
	// BatchSize bounds the deletions of one transaction (default 4096).
	BatchSize int
	// Removed is told every block deleted (in a dry run: every block that
	// would be), in the order of deletion.
	Removed func(c cid.Cid, size int64)
}

// Report says what a run did. Sizes are in bytes.
type Report struct {
	DryRun         bool          `json:"dry_run"`
	Skipped        bool          `json:"skipped"` // under TargetSize: nothing done
	Blocks         int64         `json:"blocks"`  // stored before the run
	BlockBytes     int64         `json:"block_bytes"`
	Marked         int64         `json:"marked"`          // blocks reached from the roots
	Missing        int64         `json:"missing"`         // linked from a root but not stored
	KeptYoung      int64         `json:"kept_young"`      // unreachable but younger than MinAge
	KeptLive       int64         `json:"kept_live"`       // unreachable but touched by a writer during the run
	Removed        int64         `json:"removed"`         // blocks deleted (or, dry run, to delete)
	RemovedBytes   int64         `json:"removed_bytes"`   // their sizes
	PrunedCommits  int64         `json:"pruned_commits"`  // commits whose trees were let go
	ValueLogFiles  int           `json:"value_log_files"` // value-log files rewritten to free space
	DiskBefore     int64         `json:"disk_before"`     // the store's files on disk
	DiskAfter      int64         `json:"disk_after"`
	MarkDuration   time.Duration `json:"mark_ns"`
	SweepDuration  time.Duration `json:"sweep_ns"`
	ReclaimSeconds float64       `json:"reclaim_seconds"`
}

// Collector collects the garbage of one store.
type Collector struct {
	Store   *store.Badger
	History *versions.History // nil: no history
	Pins    *pin.Set          // nil: no pins
	// Tree calls fn with the working tree's roots: Tree.LiveRoots when it
	// is open, worktree.StoredRoots otherwise; nil when there is none.
	Tree func(ctx context.Context, fn func(cid.Cid) error) error
}

// Run collects garbage once. Only one run per store at a time
// (store.ErrGCRunning otherwise).
func (col *Collector) Run(ctx context.Context, o Options) (Report, error) {
	if o.BatchSize <= 0 {
		o.BatchSize = 4096
	}
	rep := Report{DryRun: o.DryRun}
	s := col.Store
	var err error
	if rep.DiskBefore, err = s.DiskBytes(); err != nil {
		return rep, err
	}
	rep.DiskAfter = rep.DiskBefore
	if o.TargetSize > 0 {
		st, err := s.Stats(ctx)
		if err != nil {
			return rep, err
		}
		if st.BlockBytes <= o.TargetSize {
			rep.Skipped, rep.Blocks, rep.BlockBytes = true, st.Blocks, st.BlockBytes
			return rep, nil
		}
	}
	g, err := s.BeginGC()
	if err != nil {
		return rep, err
	}
	defer g.End()

	start := time.Now()
	m := &marker{s: s, h: col.History, marked: map[string]struct{}{}, direct: map[string]struct{}{}, commits: map[cid.Cid]bool{},
		bases: map[string]cid.Cid{}}
	// A block stored as a delta needs its base: marking one marks the
	// other (deltas written from here on have their bases recorded as
	// live by the writer).
	if err := s.DeltaBases(ctx, func(d, b cid.Cid) error {
		m.bases[string(d.Hash())] = b
		return nil
	}); err != nil {
		return rep, err
	}
	if err := col.markRoots(ctx, m, o); err != nil {
		return rep, err
	}
	for k := range m.direct {
		if b, ok := m.bases[k]; ok {
			m.mark(b)
		}
	}
	if err := m.walkAll(ctx, g.TakeWalks()); err != nil {
		return rep, err
	}

	// Candidates: stored, unmarked, old enough.
	var cutoff uint64
	ageKnown := true
	if o.MinAge > 0 {
		if cutoff, ageKnown, err = s.VersionBefore(ctx, time.Now().Add(-o.MinAge)); err != nil {
			return rep, err
		}
		// Blocks written since the last marker become old enough at a
		// later run only if a marker follows them, writes or not.
		if err := s.MarkClock(ctx); err != nil {
			return rep, err
		}
	}
	type cand struct {
		c       cid.Cid
		size    int64
		version uint64
	}
	var cands []cand
	err = s.AllKeys(ctx, func(k store.KeyInfo) error {
		rep.Blocks++
		rep.BlockBytes += k.Size
		if m.has(k.CID) {
			return nil
		}
		if o.MinAge > 0 && (!ageKnown || k.Version >= cutoff) {
			rep.KeptYoung++
			return nil
		}
		cands = append(cands, cand{k.CID, k.Size, k.Version})
		return nil
	})
	if err != nil {
		return rep, err
	}
	rep.Marked, rep.Missing, rep.PrunedCommits = int64(len(m.marked)), m.missing, m.pruned
	for k := range m.direct {
		if _, ok := m.marked[k]; !ok {
			rep.Marked++
		}
	}
	if o.TargetSize > 0 {
		// Oldest first, only as many as bring the store under the target.
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].version < cands[j].version })
		need, n := rep.BlockBytes-o.TargetSize, 0
		for n < len(cands) && need > 0 {
			need -= cands[n].size
			n++
		}
		cands = cands[:n]
	}
	rep.MarkDuration = time.Since(start)

	start = time.Now()
	sizes := make(map[cid.Cid]int64, min(len(cands), o.BatchSize))
	for len(cands) > 0 {
		n := min(len(cands), o.BatchSize)
		batch := make([]cid.Cid, n)
		clear(sizes)
		for i, c := range cands[:n] {
			batch[i] = c.c
			sizes[c.c] = c.size
		}
		cands = cands[n:]
		var gone []cid.Cid
		if o.DryRun {
			if err := m.walkAll(ctx, g.TakeWalks()); err != nil {
				return rep, err
			}
			for _, c := range batch {
				if !m.has(c) && !g.Live(c) {
					gone = append(gone, c)
				}
			}
		} else {
			for {
				if err := m.walkAll(ctx, g.TakeWalks()); err != nil {
					return rep, err
				}
				gone, err = g.DeleteBlocks(ctx, batch, m.has)
				if !errors.Is(err, store.ErrWalksPending) {
					break
				}
			}
			if err != nil {
				return rep, err
			}
		}
		rep.KeptLive += int64(n - len(gone))
		for _, c := range gone {
			rep.Removed++
			rep.RemovedBytes += sizes[c]
			if o.Removed != nil {
				o.Removed(c, sizes[c])
			}
		}
	}
	rep.SweepDuration = time.Since(start)
	if o.DryRun {
		return rep, nil
	}
	g.End() // writers need not record for the reclaim
	if rep.Removed > 0 {
		start = time.Now()
		if rep.ValueLogFiles, err = s.Reclaim(ctx); err != nil {
			return rep, err
		}
		rep.ReclaimSeconds = time.Since(start).Seconds()
	}
	if err := s.PruneClock(ctx, time.Now().Add(-7*24*time.Hour)); err != nil {
		return rep, err
	}
	if rep.DiskAfter, err = s.DiskBytes(); err != nil {
		return rep, err
	}
	return rep, nil
}

// markRoots marks from pins, add records, the history and the working tree.
func (col *Collector) markRoots(ctx context.Context, m *marker, o Options) error {
	if col.Pins != nil {
		pins, err := col.Pins.List(ctx)
		if err != nil {
			return err
		}
		for _, p := range pins {
			if p.Mode == pin.Direct {
				m.direct[string(p.CID.Hash())] = struct{}{}
				continue
			}
			if err := m.walk(ctx, p.CID); err != nil {
				return err
			}
		}
	}
	if col.History != nil {
		if o.PruneCommitsOlderThan > 0 {
			m.pruneBefore = time.Now().Add(-o.PruneCommitsOlderThan)
			m.refs = map[cid.Cid]bool{}
		}
		var heads []cid.Cid
		for _, refs := range []func(context.Context) (map[string]cid.Cid, error){col.History.Branches, col.History.Tags} {
			rs, err := refs(ctx)
			if err != nil {
				return err
			}
			for _, c := range rs {
				heads = append(heads, c)
			}
		}
		if _, head, err := col.History.Head(ctx); err != nil {
			return err
		} else if head.Defined() {
			heads = append(heads, head)
		}
		for _, c := range heads {
			if m.refs != nil {
				m.refs[c] = true
			}
		}
		for _, c := range heads {
			if err := m.walk(ctx, c); err != nil {
				return err
			}
		}
		err := col.History.Commits(ctx, func(c cid.Cid) error { return m.walk(ctx, c) })
		if err != nil {
			return err
		}
	}
	if col.Tree != nil {
		if err := col.Tree(ctx, func(c cid.Cid) error { return m.walk(ctx, c) }); err != nil {
			return fmt.Errorf("gc: working tree: %w", err)
		}
	}
	return nil
}

// marker marks blocks reachable from roots. It reads only blocks that can
// link (dag-pb, dag-cbor); raw leaves are marked by their CID.
type marker struct {
	s       *store.Badger
	h       *versions.History
	marked  map[string]struct{} // multihashes, each walked
	direct  map[string]struct{} // multihashes of direct pins (links not followed)
	bases   map[string]cid.Cid  // delta multihash -> its base
	missing int64

	commits     map[cid.Cid]bool // commits walked
	pruneBefore time.Time        // zero: prune nothing
	refs        map[cid.Cid]bool // commits refs point at (never pruned)
	pruned      int64
}

func (m *marker) has(c cid.Cid) bool {
	k := string(c.Hash())
	if _, ok := m.marked[k]; ok {
		return true
	}
	_, ok := m.direct[k]
	return ok
}

// mark marks one block and reports whether it was new.
func (m *marker) mark(c cid.Cid) bool {
	if unixfs.IsIdentity(c) {
		return false
	}
	k := string(c.Hash())
	if _, ok := m.marked[k]; ok {
		return false
	}
	m.marked[k] = struct{}{}
	// The bases a delta is rebuilt from (raw leaves: nothing to walk).
	for b, ok := m.bases[k]; ok; b, ok = m.bases[k] {
		k = string(b.Hash())
		if _, seen := m.marked[k]; seen {
			break
		}
		m.marked[k] = struct{}{}
	}
	return true
}

func (m *marker) walkAll(ctx context.Context, roots []cid.Cid) error {
	for _, c := range roots {
		if err := m.walk(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// walk marks root and everything below it. A block that is not stored is
// counted as missing: a pinned DAG need not be complete.
func (m *marker) walk(ctx context.Context, root cid.Cid) error {
	// Every block marked is walked (or on a stack to be): only direct pins
	// are kept without their links, and they have a set of their own.
	if !m.mark(root) {
		return nil
	}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch c.Prefix().Codec {
		case cid.Raw:
			continue
		case cid.DagCBOR:
			if m.h != nil {
				more, isCommit, err := m.commit(ctx, c)
				if err != nil {
					return err
				}
				if isCommit {
					stack = append(stack, more...)
					continue
				}
			}
		}
		var links []cid.Cid
		err := m.s.View(ctx, c, func(b []byte) error {
			var err error
			links, err = unixfs.Links(c, b)
			return err
		})
		if errors.Is(err, store.ErrNotFound) {
			m.missing++
			continue
		}
		if err != nil {
			return fmt.Errorf("gc: mark %s: %w", c, err)
		}
		for _, l := range links {
			if m.mark(l) && l.Prefix().Codec != cid.Raw {
				stack = append(stack, l)
			}
		}
	}
	return nil
}

// commit walks a commit: its tree (unless pruned) and its parents. isCommit
// is false for dag-cbor blocks that are not commits.
func (m *marker) commit(ctx context.Context, c cid.Cid) (next []cid.Cid, isCommit bool, err error) {
	if m.commits[c] {
		return nil, true, nil
	}
	cm, err := m.h.Get(ctx, c)
	switch {
	case errors.Is(err, versions.ErrNotCommit):
		return nil, false, nil
	case errors.Is(err, store.ErrNotFound):
		m.commits[c] = true
		m.missing++
		return nil, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("gc: commit %s: %w", c, err)
	}
	m.commits[c] = true
	if !m.pruneBefore.IsZero() && cm.Time.Before(m.pruneBefore) && !m.refs[c] {
		m.pruned++
	} else if m.mark(cm.Tree) {
		next = append(next, cm.Tree)
	}
	for _, p := range cm.Parents {
		m.mark(p)
		if !m.commits[p] {
			next = append(next, p)
		}
	}
	return next, true, nil
}
