package versions

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
)

// minPrefix is the shortest commit CID prefix Resolve accepts. Every commit
// CID starts "bafyrei" (CIDv1, dag-cbor, sha2-256, base32), so a prefix
// needs a few characters more than that to be unique.
const minPrefix = 6

// Head returns the branch HEAD names (DefaultBranch on a fresh repo) and
// that branch's commit, cid.Undef before its first commit.
func (h *History) Head(ctx context.Context) (branch string, commit cid.Cid, err error) {
	branch = DefaultBranch
	v, err := h.s.GetMeta(ctx, keyHead)
	switch {
	case err == nil:
		branch = string(v)
	case !errors.Is(err, store.ErrNotFound):
		return "", cid.Undef, fmt.Errorf("versions: HEAD: %w", err)
	}
	commit, err = h.metaCID(ctx, keyBranches+branch)
	if err != nil {
		return "", cid.Undef, fmt.Errorf("versions: HEAD: %w", err)
	}
	return branch, commit, nil
}

// SetHead makes branch the current one. The branch must exist, except
// DefaultBranch on a repo with no commit.
func (h *History) SetHead(ctx context.Context, branch string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.setHead(ctx, branch)
}

// SetHead is History.SetHead under the Batch's lock.
func (w Writer) SetHead(ctx context.Context, branch string) error { return w.setHead(ctx, branch) }

func (h *History) setHead(ctx context.Context, branch string) error {
	if err := ValidName(branch); err != nil {
		return err
	}
	c, err := h.metaCID(ctx, keyBranches+branch)
	if err != nil {
		return fmt.Errorf("versions: set HEAD: %w", err)
	}
	if !c.Defined() {
		empty := true
		if branch == DefaultBranch {
			if empty, err = h.noCommits(ctx); err != nil {
				return fmt.Errorf("versions: set HEAD: %w", err)
			}
		}
		if branch != DefaultBranch || !empty {
			return fmt.Errorf("versions: branch %q: %w", branch, ErrUnknownRef)
		}
	}
	return h.update(ctx, "set HEAD", func(txn store.MetaTxn) error {
		return txn.Set(keyHead, []byte(branch))
	})
}

// Branches returns every branch and its commit.
func (h *History) Branches(ctx context.Context) (map[string]cid.Cid, error) {
	return h.scanRefs(ctx, keyBranches)
}

// SetBranch creates branch name at commit c, or moves it there.
func (h *History) SetBranch(ctx context.Context, name string, c cid.Cid) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.setBranch(ctx, name, c)
}

// SetBranch is History.SetBranch under the Batch's lock.
func (w Writer) SetBranch(ctx context.Context, name string, c cid.Cid) error {
	return w.setBranch(ctx, name, c)
}

func (h *History) setBranch(ctx context.Context, name string, c cid.Cid) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if _, err := h.Get(ctx, c); err != nil {
		return fmt.Errorf("versions: branch %q: %w", name, err)
	}
	return h.update(ctx, "set branch "+name, func(txn store.MetaTxn) error {
		if err := txn.Set(keyBranches+name, []byte(c.String())); err != nil {
			return err
		}
		return txn.Set(keyCommits+c.String(), nil) // a commit made elsewhere becomes a GC root too
	})
}

// DeleteBranch removes branch name; it must not be HEAD's branch.
func (h *History) DeleteBranch(ctx context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.deleteBranch(ctx, name)
}

// DeleteBranch is History.DeleteBranch under the Batch's lock.
func (w Writer) DeleteBranch(ctx context.Context, name string) error {
	return w.deleteBranch(ctx, name)
}

func (h *History) deleteBranch(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	head, _, err := h.Head(ctx)
	if err != nil {
		return err
	}
	if name == head {
		return fmt.Errorf("versions: branch %q: %w", name, ErrCurrentBranch)
	}
	return h.update(ctx, "delete branch "+name, func(txn store.MetaTxn) error {
		if _, err := txn.Get(keyBranches + name); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("branch %q: %w", name, ErrUnknownRef)
			}
			return err
		}
		return txn.Delete(keyBranches + name)
	})
}

// Tags returns every tag and the commit it names.
func (h *History) Tags(ctx context.Context) (map[string]cid.Cid, error) {
	return h.scanRefs(ctx, keyTags)
}

// SetTag creates tag name at commit c; tags never move, so an existing tag
// gives ErrExists.
func (h *History) SetTag(ctx context.Context, name string, c cid.Cid) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.setTag(ctx, name, c)
}

// SetTag is History.SetTag under the Batch's lock.
func (w Writer) SetTag(ctx context.Context, name string, c cid.Cid) error {
	return w.setTag(ctx, name, c)
}

func (h *History) setTag(ctx context.Context, name string, c cid.Cid) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if _, err := h.Get(ctx, c); err != nil {
		return fmt.Errorf("versions: tag %q: %w", name, err)
	}
	return h.update(ctx, "set tag "+name, func(txn store.MetaTxn) error {
		_, err := txn.Get(keyTags + name)
		switch {
		case err == nil:
			return fmt.Errorf("tag %q: %w", name, ErrExists)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		if err := txn.Set(keyTags+name, []byte(c.String())); err != nil {
			return err
		}
		return txn.Set(keyCommits+c.String(), nil)
	})
}

// DeleteTag removes tag name.
func (h *History) DeleteTag(ctx context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.deleteTag(ctx, name)
}

// DeleteTag is History.DeleteTag under the Batch's lock.
func (w Writer) DeleteTag(ctx context.Context, name string) error { return w.deleteTag(ctx, name) }

func (h *History) deleteTag(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return h.update(ctx, "delete tag "+name, func(txn store.MetaTxn) error {
		if _, err := txn.Get(keyTags + name); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("tag %q: %w", name, ErrUnknownRef)
			}
			return err
		}
		return txn.Delete(keyTags + name)
	})
}

// ValidName checks a branch or tag name: not empty, at most 255 bytes of
// UTF-8, no '/', "..", '~' (Resolve's ancestor suffix), control characters
// or white space, not starting with '-' or '.', and not "HEAD". Names become
// directory names under .versions/.
func ValidName(name string) error {
	bad := func(why string) error { return fmt.Errorf("%q: %s: %w", name, why, ErrBadName) }
	switch {
	case name == "":
		return bad("empty")
	case len(name) > 255:
		return bad("longer than 255 bytes")
	case !utf8.ValidString(name):
		return bad("not UTF-8")
	case name == "HEAD":
		return bad("reserved")
	case name[0] == '-' || name[0] == '.':
		return bad("starts with '-' or '.'")
	case strings.Contains(name, ".."):
		return bad(`contains ".."`)
	case strings.ContainsAny(name, "/~"):
		return bad("contains '/' or '~'")
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return bad("contains a control character or space")
		}
	}
	return nil
}

// Resolve turns a revision into a commit CID. It accepts, in this order of
// precedence: "HEAD"; a branch name; a tag name (a branch and a tag of the
// same name resolve to the branch); a full commit CID; a unique prefix of at
// least 6 characters of a commit CID string. Any of these may end in "~N"
// (N first parents back; "~" alone is "~1"), as in "HEAD~2" or "v1~1".
func (h *History) Resolve(ctx context.Context, ref string) (cid.Cid, error) {
	// Bounds the ~ recursion below (a hostile ref of a million tildes).
	if len(ref) > maxRefLen || strings.Count(ref, "~") > maxTildes {
		return cid.Undef, fmt.Errorf("versions: ref of %d bytes: %w", len(ref), ErrUnknownRef)
	}
	if i := strings.LastIndexByte(ref, '~'); i >= 0 {
		n := 1
		if s := ref[i+1:]; s != "" {
			var err error
			if n, err = strconv.Atoi(s); err != nil || n < 0 {
				return cid.Undef, fmt.Errorf("versions: %q: bad ancestor count: %w", ref, ErrUnknownRef)
			}
		}
		c, err := h.Resolve(ctx, ref[:i])
		if err != nil {
			return cid.Undef, err
		}
		for k := 0; k < n; k++ {
			cm, err := h.Get(ctx, c)
			if err != nil {
				return cid.Undef, fmt.Errorf("versions: %q: %w", ref, err)
			}
			if len(cm.Parents) == 0 {
				return cid.Undef, fmt.Errorf("versions: %q: history is only %d commits deep: %w", ref, k+1, ErrUnknownRef)
			}
			c = cm.Parents[0]
		}
		return c, nil
	}
	if ref == "HEAD" {
		branch, c, err := h.Head(ctx)
		if err != nil {
			return cid.Undef, err
		}
		if !c.Defined() {
			return cid.Undef, fmt.Errorf("versions: HEAD: branch %q has no commit yet: %w", branch, ErrUnknownRef)
		}
		return c, nil
	}
	if ValidName(ref) == nil {
		for _, prefix := range []string{keyBranches, keyTags} {
			c, err := h.metaCID(ctx, prefix+ref)
			if err != nil {
				return cid.Undef, fmt.Errorf("versions: %q: %w", ref, err)
			}
			if c.Defined() {
				return c, nil
			}
		}
	}
	if c, err := cid.Decode(ref); err == nil {
		if _, err := h.s.GetMeta(ctx, keyCommits+c.String()); err == nil {
			return c, nil
		}
		if _, err := h.Get(ctx, c); err == nil { // a commit not (yet) in the index
			return c, nil
		}
		return cid.Undef, fmt.Errorf("versions: %q: %w", ref, ErrUnknownRef)
	}
	if len(ref) >= minPrefix && ValidName(ref) == nil {
		var matches []cid.Cid
		err := h.s.ScanMeta(ctx, keyCommits+ref, func(key string, _ []byte) error {
			c, err := cid.Decode(strings.TrimPrefix(key, keyCommits))
			if err != nil {
				return fmt.Errorf("commit index key %q: %w", key, err)
			}
			matches = append(matches, c)
			return nil
		})
		if err != nil {
			return cid.Undef, fmt.Errorf("versions: %q: %w", ref, err)
		}
		switch len(matches) {
		case 1:
			return matches[0], nil
		case 0:
		default:
			return cid.Undef, fmt.Errorf("versions: %q matches %d commits: %w", ref, len(matches), ErrAmbiguous)
		}
	}
	return cid.Undef, fmt.Errorf("versions: %q: %w", ref, ErrUnknownRef)
}

// update runs fn in one metadata transaction and syncs it: ref changes are
// rare user actions that must survive a crash once they return.
func (h *History) update(ctx context.Context, what string, fn func(store.MetaTxn) error) error {
	if err := h.s.UpdateMeta(ctx, fn); err != nil {
		return fmt.Errorf("versions: %s: %w", what, err)
	}
	if err := h.s.Sync(); err != nil {
		return fmt.Errorf("versions: %s: %w", what, err)
	}
	return nil
}

// metaCID reads a CID-valued key; cid.Undef when the key is absent.
func (h *History) metaCID(ctx context.Context, key string) (cid.Cid, error) {
	v, err := h.s.GetMeta(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return cid.Undef, nil
	}
	if err != nil {
		return cid.Undef, err
	}
	return parseRef(key, v)
}

// txnCID is metaCID inside a transaction.
func txnCID(txn store.MetaTxn, key string) (cid.Cid, error) {
	v, err := txn.Get(key)
	if errors.Is(err, store.ErrNotFound) {
		return cid.Undef, nil
	}
	if err != nil {
		return cid.Undef, err
	}
	return parseRef(key, v)
}

func parseRef(key string, v []byte) (cid.Cid, error) {
	c, err := cid.Decode(string(v))
	if err != nil {
		return cid.Undef, fmt.Errorf("%s holds %q: %w", key, v, err)
	}
	return c, nil
}

// scanRefs reads every ref under prefix into a map by name.
func (h *History) scanRefs(ctx context.Context, prefix string) (map[string]cid.Cid, error) {
	out := map[string]cid.Cid{}
	err := h.s.ScanMeta(ctx, prefix, func(key string, v []byte) error {
		c, err := parseRef(key, v)
		if err != nil {
			return err
		}
		out[strings.TrimPrefix(key, prefix)] = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("versions: list %s: %w", strings.TrimSuffix(prefix, "/"), err)
	}
	return out, nil
}

// noCommits reports whether the commit index is empty.
func (h *History) noCommits(ctx context.Context) (bool, error) {
	errFound := errors.New("found")
	err := h.s.ScanMeta(ctx, keyCommits, func(string, []byte) error { return errFound })
	if errors.Is(err, errFound) {
		return false, nil
	}
	return err == nil, err
}

// Limits on the refs Resolve accepts.
const (
	maxRefLen = 1024
	maxTildes = 64
)
