package versions

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ipfs/go-cid"
)

// Stop, returned by the function given to Log, ends the walk early; Log then
// returns nil.
var Stop = errors.New("stop")

// Log calls fn for from and each of its ancestors once, newest first (by
// Time; commits with the same Time in CID string order), until fn returns an
// error. fn's error is returned as is, except Stop, which ends the walk
// without error. An undefined from (no commit yet) calls fn never.
func (h *History) Log(ctx context.Context, from cid.Cid, fn func(Commit) error) error {
	if !from.Defined() {
		return nil
	}
	first, err := h.Get(ctx, from)
	if err != nil {
		return err
	}
	seen := map[cid.Cid]bool{from: true}
	q := &commitQueue{first}
	for q.Len() > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := heap.Pop(q).(Commit)
		if err := fn(c); err != nil {
			if errors.Is(err, Stop) {
				return nil
			}
			return err
		}
		for _, p := range c.Parents {
			if seen[p] {
				continue
			}
			seen[p] = true
			pc, err := h.Get(ctx, p)
			if err != nil {
				return fmt.Errorf("versions: parent of %s: %w", c.CID, err)
			}
			heap.Push(q, pc)
		}
	}
	return nil
}

// commitQueue is a heap of commits, newest on top.
type commitQueue []Commit

func (q commitQueue) Len() int { return len(q) }
func (q commitQueue) Less(i, j int) bool {
	if !q[i].Time.Equal(q[j].Time) {
		return q[i].Time.After(q[j].Time)
	}
	return q[i].CID.String() < q[j].CID.String()
}
func (q commitQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *commitQueue) Push(x any)   { *q = append(*q, x.(Commit)) }
func (q *commitQueue) Pop() any {
	old := *q
	c := old[len(old)-1]
	*q = old[:len(old)-1]
	return c
}

// Commits calls fn for every commit in the index: every commit ever made or
// pointed at by a ref, which garbage collection keeps with their trees.
func (h *History) Commits(ctx context.Context, fn func(cid.Cid) error) error {
	// Collect first: fn may be slow (a GC mark phase) and should not hold
	// a read transaction open meanwhile.
	var all []cid.Cid
	err := h.s.ScanMeta(ctx, keyCommits, func(key string, _ []byte) error {
		c, err := cid.Decode(strings.TrimPrefix(key, keyCommits))
		if err != nil {
			return fmt.Errorf("commit index key %q: %w", key, err)
		}
		all = append(all, c)
		return nil
	})
	if err != nil {
		return fmt.Errorf("versions: list commits: %w", err)
	}
	for _, c := range all {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// IsAncestor reports whether a is b or one of b's ancestors. An undefined
// a or b is the ancestor of nothing.
func (h *History) IsAncestor(ctx context.Context, a, b cid.Cid) (bool, error) {
	if !a.Defined() || !b.Defined() {
		return false, nil
	}
	seen := map[cid.Cid]bool{b: true}
	todo := []cid.Cid{b}
	for len(todo) > 0 {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		c := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if c.Equals(a) {
			return true, nil
		}
		cm, err := h.Get(ctx, c)
		if err != nil {
			return false, err
		}
		for _, p := range cm.Parents {
			if !seen[p] {
				seen[p] = true
				todo = append(todo, p)
			}
		}
	}
	return false, nil
}
