package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fsType is the type our mounts show in /proc/self/mountinfo ("fuse." and
// go-fuse's Name).
const fsType = "fuse.ipfrs"

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	mountpoint, fstype, source string
}

// mounts lists what is mounted, in mount order.
func mounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source super
		pre, post, ok := strings.Cut(s.Text(), " - ")
		fields, rest := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(rest) < 2 {
			continue
		}
		out = append(out, mountEntry{mountpoint: unescapeMountinfo(fields[4]), fstype: rest[0], source: unescapeMountinfo(rest[1])})
	}
	return out, s.Err()
}

// mountAt returns what is mounted on top at dir.
func mountAt(dir string) (mountEntry, bool, error) {
	ms, err := mounts()
	var found mountEntry
	ok := false
	for _, m := range ms {
		if m.mountpoint == dir {
			found, ok = m, true
		}
	}
	return found, ok, err
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fsName is the mount's source: the repo, so that mountinfo and df tell
// which repo is mounted where, and a dead mount of a repo can be found
// after its daemon died. Mount options cannot carry commas or blanks.
func fsName(repo string) string {
	if strings.ContainsAny(repo, ", \t\n\\") {
		return "ipfrs"
	}
	return repo
}

// probe stats dir and asks its file system for statfs, with a timeout (a
// hung FUSE server never answers). statfs always reaches the server; stat
// may be answered from the kernel's attribute cache.
func probe(dir string, timeout time.Duration) (unix.Stat_t, error) {
	type result struct {
		st  unix.Stat_t
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		var fs unix.Statfs_t
		if r.err = unix.Stat(dir, &r.st); r.err == nil {
			r.err = unix.Statfs(dir, &fs)
		}
		if r.err != nil {
			r.err = &os.PathError{Op: "stat", Path: dir, Err: r.err}
		}
		ch <- r
	}()
	select {
	case r := <-ch:
		return r.st, r.err
	case <-time.After(timeout):
		return unix.Stat_t{}, fmt.Errorf("stat %s: no answer within %v", dir, timeout)
	}
}

// isDeadConn reports whether err is what a FUSE mount whose daemon is gone
// answers.
func isDeadConn(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}

// detach removes a mount lazily: as root directly, else through
// fusermount3.
func detach(dir string) error {
	err := unix.Unmount(dir, unix.MNT_DETACH)
	if err == nil {
		return nil
	}
	if out, err2 := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); err2 != nil {
		return fmt.Errorf("unmount %s: %w (fusermount3: %s)", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}
