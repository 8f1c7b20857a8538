package worktree

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// Keys in the repo's metadata.
const (
	inodePrefix  = "wt/i/"   // + ino (16 hex digits) -> record (JSON)
	dentryPrefix = "wt/d/"   // + parent ino (16 hex) + "/" + name -> child ino (hex)
	nextInoKey   = "wt/next" // next inode number to hand out (decimal)
	rootCIDKey   = "wt/root" // the tree's last computed DAG root (CID string)
)

// RootIno is the root directory's inode number.
const RootIno = 1

// record is an inode as persisted. Content, Size and Tsize describe the
// file content last published (durable blocks only).
type record struct {
	Ino     uint64            `json:"ino"`
	Mode    uint32            `json:"mode"` // file type bits and permissions
	UID     uint32            `json:"uid"`
	GID     uint32            `json:"gid"`
	Nlink   uint32            `json:"nlink"`
	Size    uint64            `json:"size,omitempty"`
	Atime   int64             `json:"atime"` // ns since the epoch
	Mtime   int64             `json:"mtime"`
	Ctime   int64             `json:"ctime"`
	Content string            `json:"content,omitempty"` // CID of the file's DAG; "" for empty
	Tsize   uint64            `json:"tsize,omitempty"`   // bytes of that DAG's blocks
	Target  string            `json:"target,omitempty"`  // symlink target
	Rdev    uint32            `json:"rdev,omitempty"`    // device nodes
	Xattrs  map[string][]byte `json:"xattrs,omitempty"`
}

func (r *record) isDir() bool     { return r.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (r *record) isRegular() bool { return r.Mode&syscall.S_IFMT == syscall.S_IFREG }
func (r *record) isSymlink() bool { return r.Mode&syscall.S_IFMT == syscall.S_IFLNK }

// isSpecial: a named pipe, socket or device node, which UnixFS cannot
// represent: the working tree keeps them, commits leave them out.
func (r *record) isSpecial() bool {
	switch r.Mode & syscall.S_IFMT {
	case syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		return true
	}
	return false
}

func inodeKey(ino uint64) string { return fmt.Sprintf("%s%016x", inodePrefix, ino) }

func dentryKey(parent uint64, name string) string {
	return fmt.Sprintf("%s%016x/%s", dentryPrefix, parent, name)
}

// parseDentryKey splits a dentry key (without the metadata prefix).
func parseDentryKey(key string) (parent uint64, name string, err error) {
	rest := strings.TrimPrefix(key, dentryPrefix)
	hex, name, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, "", fmt.Errorf("worktree: bad dentry key %q", key)
	}
	parent, err = strconv.ParseUint(hex, 16, 64)
	return parent, name, err
}

func encodeRecord(r *record) ([]byte, error) { return json.Marshal(r) }

func decodeRecord(b []byte) (*record, error) {
	r := &record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("worktree: bad inode record: %w", err)
	}
	return r, nil
}
