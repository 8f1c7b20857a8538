package worktree

import (
	"context"
	"sort"
	"strings"
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
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return err
	}
	_, exists := in.rec.Xattrs[name]
	switch {
	case flags&XattrCreate != 0 && exists:
		return ErrExist
	case flags&XattrReplace != 0 && !exists:
		return ErrNoAttr
	}
	old := in.rec.Xattrs
	x := make(map[string][]byte, len(old)+1)
	for k, v := range old {
		x[k] = v
	}
	x[name] = append([]byte(nil), value...)
	in.rec.Xattrs = x
	if err := t.persist(ctx, nil, in); err != nil {
		in.rec.Xattrs = old
		return err
	}
	return nil
}

// Removexattr removes a user.* attribute.
func (t *Tree) Removexattr(ctx context.Context, ino uint64, name string) error {
	if err := checkXattr(name); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	in, err := t.get(ino)
	if err != nil {
		return err
	}
	if _, ok := in.rec.Xattrs[name]; !ok {
		return ErrNoAttr
	}
	old := in.rec.Xattrs
	x := make(map[string][]byte, len(old))
	for k, v := range old {
		if k != name {
			x[k] = v
		}
	}
	in.rec.Xattrs = x
	if err := t.persist(ctx, nil, in); err != nil {
		in.rec.Xattrs = old
		return err
	}
	return nil
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
