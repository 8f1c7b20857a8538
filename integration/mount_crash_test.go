package integration

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// TestMountCrash kills the daemon with SIGKILL while files are being
// replaced, remounts, and checks every name whose fsyncs had returned.
// IPFRS_CRASH_ROUNDS sets the number of rounds (default 10).
func TestMountCrash(t *testing.T) {
	rounds := 10
	if s := os.Getenv("IPFRS_CRASH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("IPFRS_CRASH_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	repo := filepath.Join(t.TempDir(), "repo")
	log := &durableLog{durable: map[string][32]byte{}, inFlight: map[string][32]byte{}}

	for round := range rounds {
		mnt, kill9 := mountRepoKill9(t, repo)
		if !log.check(t, mnt) {
			t.Fatalf("round %d: files lost or damaged by the crash before it", round)
		}
		var killed atomic.Bool
		var wg sync.WaitGroup
		for _, dir := range []string{".", "runs/ckpt"} {
			writerSeed := rng.Uint64()
			wg.Go(func() {
				err := crashWriter(mnt, dir, writerSeed, log)
				if !killed.Load() {
					t.Errorf("round %d: writer in %s failed before the crash: %v", round, dir, err)
				}
			})
		}
		time.Sleep(time.Duration(50+rng.IntN(451)) * time.Millisecond)
		killed.Store(true)
		kill9()
		wg.Wait()
		if err := unmountDead(t, mnt); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d replacements done, %d renames in flight at the crash", round, log.replaced, len(log.inFlight))
		log.replaced = 0
	}

	mnt, stop := mountRepo(t, repo)
	log.check(t, mnt)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}
