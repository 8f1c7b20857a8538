package repository

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// Every operation here that reads the working tree or changes it together
// with a ref runs in one versions Batch: a commit records the tree as it is
// when its branch is read, and a switch, reset or merge cannot interleave
// with a commit (which would then land on the wrong branch, or be left
// behind by the branch it returned on).

// ChunkerParams names the layout working trees are written with; commits
// record it.
func ChunkerParams() string {
	l := unixfs.DefaultLayout()
	return fmt.Sprintf("%s/links-%d", l.Chunker, l.MaxLinks)
}

// AfterCommit adds fn to what runs after every commit this repo makes
// (commit, autocommit, a tag of a changed tree), once the commit is
// durable and outside the history's lock; fn must not block for long.
func (r *Repo) AfterCommit(fn func(ctx context.Context, c versions.Commit)) {
	r.hookMu.Lock()
	defer r.hookMu.Unlock()
	r.afterCommit = append(r.afterCommit, fn)
}

func (r *Repo) committed(ctx context.Context, c versions.Commit) {
	r.hookMu.Lock()
	hooks := r.afterCommit
	r.hookMu.Unlock()
	for _, fn := range hooks {
		fn(ctx, c)
	}
}

// Commit records the working tree on the current branch with c's message
// and author (c.Tree and c.Chunker are filled in). Without allowEmpty a tree
// equal to HEAD's gives versions.ErrNothingToCommit.
func (r *Repo) Commit(ctx context.Context, c versions.Commit, allowEmpty bool) (versions.Commit, error) {
	t, err := r.Tree(ctx)
	if err != nil {
		return versions.Commit{}, err
	}
	var out versions.Commit
	err = r.history.Batch(ctx, func(w versions.Writer) error {
		root, err := t.Root(ctx)
		if err != nil {
			return err
		}
		c.Tree, c.Chunker = root.CID, ChunkerParams()
		out, err = w.Create(ctx, c, allowEmpty)
		return err
	})
	if err == nil {
		r.committed(ctx, out)
	}
	return out, err
}

// TagTree tags the working tree as name, committing it first when it
// changed since HEAD's commit (what mkdir .versions/tags/NAME does). It
// returns the tagged commit.
func (r *Repo) TagTree(ctx context.Context, name, author string) (cid.Cid, error) {
	if err := versions.ValidName(name); err != nil {
		return cid.Undef, err
	}
	t, err := r.Tree(ctx)
	if err != nil {
		return cid.Undef, err
	}
	var tagged cid.Cid
	var made versions.Commit // the commit made first, if any
	err = r.history.Batch(ctx, func(w versions.Writer) error {
		root, err := t.Root(ctx)
		if err != nil {
			return err
		}
		cm, err := w.Create(ctx, versions.Commit{Tree: root.CID, Message: "tag " + name, Author: author,
			Chunker: ChunkerParams()}, false)
		switch {
		case errors.Is(err, versions.ErrNothingToCommit):
			if _, tagged, err = w.Head(ctx); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			tagged, made = cm.CID, cm
		}
		return w.SetTag(ctx, name, tagged)
	})
	if made.CID.Defined() {
		// Committed even when the tag then failed: the commit is on its
		// branch.
		r.committed(ctx, made)
	}
	return tagged, err
}

// SetRef creates or moves branch name (kind "branch"), or creates tag name
// (kind "tag"), at the commit ref resolves to.
func (r *Repo) SetRef(ctx context.Context, kind, name, ref string) error {
	if err := versions.ValidName(name); err != nil {
		return err
	}
	return r.history.Batch(ctx, func(w versions.Writer) error {
		c, err := w.Resolve(ctx, ref)
		if err != nil {
			return err
		}
		if kind == "tag" {
			return w.SetTag(ctx, name, c)
		}
		return w.SetBranch(ctx, name, c)
	})
}

// DeleteRef deletes branch or tag name.
func (r *Repo) DeleteRef(ctx context.Context, kind, name string) error {
	if kind == "tag" {
		return r.history.DeleteTag(ctx, name)
	}
	return r.history.DeleteBranch(ctx, name)
}

// ErrDirty is returned by Switch and Merge when the working tree differs
// from HEAD's commit and changes are not to be discarded.
var ErrDirty = errors.New("the working tree has uncommitted changes; commit them or use --discard-changes")

// requireClean fails with ErrDirty when the working tree differs from
// HEAD's commit.
func requireClean(ctx context.Context, h versions.Writer, t *worktree.Tree) error {
	root, err := t.Root(ctx)
	if err != nil {
		return err
	}
	_, head, err := h.Head(ctx)
	if err != nil {
		return err
	}
	if !head.Defined() {
		if ents, _ := t.Readdir(worktree.RootIno); len(ents) == 0 {
			return nil
		}
		return fmt.Errorf("no commit yet: %w", ErrDirty)
	}
	cm, err := h.Get(ctx, head)
	if err != nil {
		return err
	}
	if !cm.Tree.Equals(root.CID) {
		return ErrDirty
	}
	return nil
}

// treeOf returns the commit ref names and its tree.
func treeOf(ctx context.Context, h versions.Writer, ref string) (commit, tree cid.Cid, err error) {
	c, err := h.Resolve(ctx, ref)
	if err != nil {
		return cid.Undef, cid.Undef, err
	}
	cm, err := h.Get(ctx, c)
	return c, cm.Tree, err
}

// Switch makes branch the current one and the working tree its tree. It
// returns the branch's commit.
func (r *Repo) Switch(ctx context.Context, branch string, discard bool) (cid.Cid, error) {
	t, err := r.Tree(ctx)
	if err != nil {
		return cid.Undef, err
	}
	var head cid.Cid
	err = r.history.Batch(ctx, func(w versions.Writer) error {
		branches, err := w.Branches(ctx)
		if err != nil {
			return err
		}
		var ok bool
		if head, ok = branches[branch]; !ok {
			return fmt.Errorf("no branch %q (create it with: branch %s): %w", branch, branch, versions.ErrUnknownRef)
		}
		if !discard {
			if err := requireClean(ctx, w, t); err != nil {
				return err
			}
		}
		cm, err := w.Get(ctx, head)
		if err != nil {
			return err
		}
		if _, err := t.Replace(ctx, "", cm.Tree); err != nil {
			return err
		}
		return w.SetHead(ctx, branch)
	})
	return head, err
}

// Reset moves the current branch to the commit ref names and makes the
// working tree its tree.
func (r *Repo) Reset(ctx context.Context, ref string) error {
	t, err := r.Tree(ctx)
	if err != nil {
		return err
	}
	return r.history.Batch(ctx, func(w versions.Writer) error {
		c, tree, err := treeOf(ctx, w, ref)
		if err != nil {
			return err
		}
		if _, err := t.Replace(ctx, "", tree); err != nil {
			return err
		}
		branch, _, err := w.Head(ctx)
		if err != nil {
			return err
		}
		return w.SetBranch(ctx, branch, c)
	})
}

// MergeResult says what Merge did.
type MergeResult struct {
	Branch   string
	To       cid.Cid
	UpToDate bool // ref was already in the branch: nothing changed
}

// ErrDiverged is returned by Merge for histories that are not a
// fast-forward.
var ErrDiverged = errors.New("only fast-forward merges are supported")

// Merge fast-forwards the current branch to the commit ref names.
func (r *Repo) Merge(ctx context.Context, ref string) (MergeResult, error) {
	t, err := r.Tree(ctx)
	if err != nil {
		return MergeResult{}, err
	}
	var res MergeResult
	err = r.history.Batch(ctx, func(w versions.Writer) error {
		c, tree, err := treeOf(ctx, w, ref)
		if err != nil {
			return err
		}
		branch, head, err := w.Head(ctx)
		if err != nil {
			return err
		}
		res = MergeResult{Branch: branch, To: c}
		if head.Defined() {
			if up, err := w.IsAncestor(ctx, c, head); err != nil {
				return err
			} else if up {
				res.UpToDate = true
				return nil
			}
			if ff, err := w.IsAncestor(ctx, head, c); err != nil {
				return err
			} else if !ff {
				return fmt.Errorf("%s and %s have diverged: %w", branch, ref, ErrDiverged)
			}
		}
		if err := requireClean(ctx, w, t); err != nil {
			return err
		}
		if _, err := t.Replace(ctx, "", tree); err != nil {
			return err
		}
		return w.SetBranch(ctx, branch, c)
	})
	return res, err
}

// Restore brings paths (from the tree's root) back from the commit source
// names. Every path is resolved before anything changes.
func (r *Repo) Restore(ctx context.Context, source string, paths []string) error {
	t, err := r.Tree(ctx)
	if err != nil {
		return err
	}
	return r.history.Batch(ctx, func(w versions.Writer) error {
		_, tree, err := treeOf(ctx, w, source)
		if err != nil {
			return err
		}
		subs := make([]cid.Cid, len(paths))
		for i, p := range paths {
			if subs[i], err = unixfs.Resolve(ctx, r.store, tree, p); err != nil {
				return fmt.Errorf("%s is not in %s: %w", p, source, err)
			}
		}
		for i, p := range paths {
			if _, err := t.Replace(ctx, p, subs[i]); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	})
}

// WorkingRoot is the working tree's root CID as it is now.
func (r *Repo) WorkingRoot(ctx context.Context) (cid.Cid, error) {
	t, err := r.Tree(ctx)
	if err != nil {
		return cid.Undef, err
	}
	root, err := t.Root(ctx)
	return root.CID, err
}
