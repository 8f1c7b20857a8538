package integration

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// durableLog is what the writers were promised: once a file's fsync, the
// rename over its name and the fsync of its folder have returned, the name
// must survive a crash with exactly that content. While a rename is in
// flight the name may hold the old content or the new one.
type durableLog struct {
	mu       sync.Mutex
	durable  map[string][32]byte // name -> content it must hold
	inFlight map[string][32]byte // name -> content being renamed over it
	replaced int                 // replacements completed, for the log
}

func (l *durableLog) renaming(name string, sum [32]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight[name] = sum
}

func (l *durableLog) renamed(name string, sum [32]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.inFlight, name)
	l.durable[name] = sum
	l.replaced++
}

// check compares the mounted tree with the log after a crash, then takes
// what it found as the new durable state: it was read back from the repo.
// It reports whether everything promised was there.
func (l *durableLog) check(t *testing.T, mnt string) bool {
	t.Helper()
	ok := true
	l.mu.Lock()
	defer l.mu.Unlock()
	names := map[string]bool{}
	for name := range l.durable {
		names[name] = true
	}
	for name := range l.inFlight {
		names[name] = true
	}
	for name := range names {
		old, wasDurable := l.durable[name]
		next, inFlight := l.inFlight[name]
		data, err := os.ReadFile(filepath.Join(mnt, name))
		switch {
		case os.IsNotExist(err) && !wasDurable:
			// A first rename to this name was in flight.
		case err != nil:
			ok = false
			t.Errorf("%s: %v (durable: %v, rename in flight: %v)", name, err, wasDurable, inFlight)
		case sha256.Sum256(data) == old && wasDurable:
			l.durable[name] = old
		case sha256.Sum256(data) == next && inFlight:
			l.durable[name] = next
		default:
			ok = false
			t.Errorf("%s: %d bytes that are neither the durable content (%v) nor the one being renamed in (%v)",
				name, len(data), wasDurable, inFlight)
		}
		delete(l.inFlight, name)
	}
	return ok
}

// crashWriter replaces files in dir (relative to mnt) the way checkpoint
// writers do, atomically and durably, until an operation fails.
func crashWriter(mnt, dir string, seed uint64, log *durableLog) error {
	if err := os.MkdirAll(filepath.Join(mnt, dir), 0o755); err != nil {
		return err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if err := fsyncPath(filepath.Join(mnt, filepath.Dir(d))); err != nil {
			return err
		}
		if d == "." {
			break
		}
	}
	sizes := []int{0, 1, 4096, 100_000, 1<<20 + 3, 300 << 10}
	for i := 0; ; i++ {
		name := filepath.Join(dir, fmt.Sprintf("file-%d", i%5))
		data := randomBytes(seed+uint64(i), sizes[i%len(sizes)])
		sum := sha256.Sum256(data)
		tmp := fmt.Sprintf("%s.tmp-%d-%d", name, seed, i)
		if err := writeSynced(filepath.Join(mnt, tmp), data); err != nil {
			return err
		}
		log.renaming(name, sum)
		if err := os.Rename(filepath.Join(mnt, tmp), filepath.Join(mnt, name)); err != nil {
			return err
		}
		if err := fsyncPath(filepath.Join(mnt, dir)); err != nil {
			return err
		}
		log.renamed(name, sum)
	}
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func fsyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
