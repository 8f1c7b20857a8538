package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrDamagedValueLog: the newest value-log file has an entry that fails its
// checksum with entries after it. Badger's read-write open cuts that file
// at its first bad entry, so opening would silently drop every block stored
// after the damage; Open refuses instead. Read-only opens (verify, cat,
// export) still work and show which blocks are damaged.
var ErrDamagedValueLog = errors.New("damaged value log")

// The value-log format of Badger v4 (value.go, structs.go): a 20-byte file
// header, then entries of [meta][userMeta][uvarint klen][uvarint vlen]
// [uvarint expiresAt] key value [crc32-Castagnoli, big endian, of all before].
const (
	vlogFileHeader = 20
	vlogMaxHeader  = 2 + 2*binary.MaxVarintLen32 + binary.MaxVarintLen64
	vlogPage       = 4096
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkNewestValueLog finds damage in the value-log file that a read-write
// open would truncate. A tail cut short by a crash is not damage: after a
// SIGKILL the bytes after a torn entry are zero (the file was preallocated
// and Badger writes it in order), and after a power loss a torn entry holds
// a page that never reached the disk (zeros). An entry whose checksum fails
// with neither, followed by more data, was altered after it was written.
func checkNewestValueLog(dir string) error {
	// Only while no other process has the store open (Badger holds a
	// flock on the directory); otherwise Badger's open reports it in use.
	d, err := os.Open(dir)
	if err != nil {
		return nil // a new store
	}
	defer d.Close()
	if unix.Flock(int(d.Fd()), unix.LOCK_SH|unix.LOCK_NB) != nil {
		return nil
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)
	if err := removeEmptyMemtables(dir); err != nil {
		return err
	}
	path, err := newestValueLog(dir)
	if err != nil || path == "" {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if fi.Size() <= vlogFileHeader {
		return nil
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("store: map %s: %w", path, err)
	}
	defer unix.Munmap(b)
	at, after := findValueLogDamage(b)
	if at < 0 {
		return nil
	}
	return fmt.Errorf("store: %s: entry at offset %d fails its checksum and %d bytes of entries follow it; "+
		"opening the repo read-write would discard them, so it stays closed (read-only commands such as verify, "+
		"cat and export still work): %w", path, at, after, ErrDamagedValueLog)
}

// findValueLogDamage returns the offset of a damaged entry followed by
// data, and how many bytes follow it; -1 when there is none.
func findValueLogDamage(b []byte) (at, after int) {
	off := vlogFileHeader
	for off < len(b) {
		end, zero, ok := vlogEntry(b, off)
		switch {
		case zero:
			return -1, 0 // the end of what was written
		case ok:
			off = end
			continue
		}
		rest := off + vlogMaxHeader
		if end > 0 {
			if hasZeroPage(b, off, end) {
				return -1, 0 // a write torn by a power loss
			}
			rest = end
		}
		if anyNonZero(b, rest) {
			return off, len(b) - rest
		}
		return -1, 0 // a torn tail
	}
	return -1, 0
}

// vlogEntry parses the entry at off: its end, whether it is all zero (no
// entry), and whether its checksum matches. end is 0 when the header does
// not parse or the entry would run past the file.
func vlogEntry(b []byte, off int) (end int, zero, ok bool) {
	if off+2 > len(b) {
		return 0, true, false
	}
	i := off + 2
	var v [3]uint64
	for k := range v {
		x, n := binary.Uvarint(b[i:min(len(b), i+binary.MaxVarintLen64)])
		if n <= 0 {
			return 0, false, false
		}
		v[k], i = x, i+n
	}
	klen, vlen := v[0], v[1]
	if b[off] == 0 && b[off+1] == 0 && klen == 0 && vlen == 0 && v[2] == 0 {
		return 0, true, false
	}
	if klen > 1<<16 || uint64(i)+klen+vlen+4 > uint64(len(b)) {
		return 0, false, false
	}
	end = i + int(klen) + int(vlen) + 4
	sum := binary.BigEndian.Uint32(b[end-4 : end])
	return end, false, crc32.Checksum(b[off:end-4], castagnoli) == sum
}

// hasZeroPage reports whether a whole page inside [from, to) is zero.
func hasZeroPage(b []byte, from, to int) bool {
	for p := (from + vlogPage - 1) / vlogPage * vlogPage; p+vlogPage <= to; p += vlogPage {
		if !anyNonZero(b[:p+vlogPage], p) {
			return true
		}
	}
	return false
}

// anyNonZero reports whether b holds a non-zero byte from off on.
func anyNonZero(b []byte, off int) bool {
	for _, c := range b[min(off, len(b)):] {
		if c != 0 {
			return true
		}
	}
	return false
}

// newestValueLog is the value-log file with the highest number, which a
// read-write open scans and truncates; "" when there is none.
func newestValueLog(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return "", nil
		}
		return "", fmt.Errorf("store: %w", err)
	}
	best, newest := -1, ""
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".vlog")
		if !ok {
			continue
		}
		if fid, err := strconv.Atoi(name); err == nil && fid > best {
			best, newest = fid, filepath.Join(dir, e.Name())
		}
	}
	return newest, nil
}

// removeEmptyMemtables deletes memtable files of zero bytes: a crash between
// Badger's creating one and sizing it leaves it so, and Badger's open then
// fails on it ("Create a new file") for good. An empty file holds no
// entries. Called only while no other process has the store open.
func removeEmptyMemtables(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("store: %w", err)
			}
		}
	}
	return nil
}
