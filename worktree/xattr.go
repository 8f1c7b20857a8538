package worktree

import (
	"context"
	"sort"
	"strings"
	"time"
)

// CIDXattr is the read-only extended attribute that holds the CID of a file
// or directory.
const CIDXattr = "user.ipfrs.cid"

// Limits on extended attributes (as ext4 and the VFS allow).
const (
	maxXattrName  = 255
	maxXattrValue = 64 << 10
)

// Getxattr returns the value of an extended attribute.
func (t *Tree) Getxattr(ctx context.Context, ino uint64, name string) ([]byte, error) {
	if name == CIDXattr {
		c, err := t.CID(ctx, ino)
		if err != nil {
			return nil, err
		}
		return []byte(c.String()), nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return nil, err
	}
	v, ok := in.rec.Xattrs[name]
	if !ok {
		return nil, ErrNoAttr
	}
	return v, nil
}

// Listxattr lists attribute names, CIDXattr included, sorted.
func (t *Tree) Listxattr(ino uint64) ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return nil, err
	}
	names := []string{CIDXattr}
	for n := range in.rec.Xattrs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Xattr set flags (setxattr(2)).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// Setxattr sets a user.* attribute; other namespaces are not supported and
// CIDXattr is read-only.
func (t *Tree) Setxattr(ctx context.Context, ino uint64, name string, value []byte, flags uint32) error {
	if err := checkXattr(name); err != nil {
		return err
	}
	if len(value) > maxXattrValue {
		return ErrRange
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	in, err := t.get(ino)
	if err != nil {
		t.mu.Unlock()
		return err
	}
	_, exists := in.rec.Xattrs[name]
	switch {
	case flags&XattrCreate != 0 && exists:
		t.mu.Unlock()
		return ErrExist
	case flags&XattrReplace != 0 && !exists:
		t.mu.Unlock()
		return ErrNoAttr
	}
	var c change
	r := c.rec(in)
	x := make(map[string][]byte, len(r.Xattrs)+1)
	for k, v := range r.Xattrs {
		x[k] = v
	}
	x[name] = append([]byte(nil), value...)
	r.Xattrs = x
	r.Ctime = time.Now().UnixNano()
	t.mu.Unlock()
	return t.commit(ctx, &c)
}

// commit writes a change of records alone and applies it once written.
func (t *Tree) commit(ctx context.Context, c *change) error {
	if err := t.write(ctx, c, nil); err != nil {
		return err
	}
	t.mu.Lock()
	c.apply()
	t.mu.Unlock()
	return nil
}

// Removexattr removes a user.* attribute.
func (t *Tree) Removexattr(ctx context.Context, ino uint64, name string) error {
	if err := checkXattr(name); err != nil {
		return err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	in, err := t.get(ino)
	if err == nil {
		if _, ok := in.rec.Xattrs[name]; !ok {
			err = ErrNoAttr
		}
	}
	if err != nil {
		t.mu.Unlock()
		return err
	}
	var c change
	r := c.rec(in)
	x := make(map[string][]byte, len(r.Xattrs))
	for k, v := range r.Xattrs {
		if k != name {
			x[k] = v
		}
	}
	r.Xattrs = x
	r.Ctime = time.Now().UnixNano()
	t.mu.Unlock()
	return t.commit(ctx, &c)
}

func checkXattr(name string) error {
	switch {
	case name == CIDXattr:
		return ErrPermission
	case len(name) > maxXattrName:
		return ErrRange
	case !strings.HasPrefix(name, "user.") || len(name) == len("user."):
		return ErrNotSupported
	}
	return nil
}
