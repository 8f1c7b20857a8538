package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeLoop writes files under dir until stop is closed; errors after stop
// (the mount going away) are expected and ignored.
func writeLoop(t *testing.T, dir string, w int, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := filepath.Join(dir, fmt.Sprintf("w%d-%d", w, i%8))
			if err := os.WriteFile(p, randomBytes(uint64(i), 4096+i%5000), 0o644); err != nil {
				select {
				case <-stop:
				default:
					t.Errorf("writer %d: %v", w, err)
				}
				return
			}
		}
	}()
}

// logCIDs is the set of commits `log` lists.
func logCIDs(t *testing.T, repo string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(must(t, repo, "log")), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			out[f[0]] = true
		}
	}
	return out
}

// 32 concurrent commits, tags and mkdir .versions/tags/X from separate
// processes (commit and tag are forwarded to the daemon) with autocommit
// every 10 ms and writers in the tree: none fails, and every commit that
// returned is in the log.
func TestConcurrentCommitsThroughTheMount(t *testing.T) {
	repo := t.TempDir()
	d := startMount(t, repo, "--autocommit", "10ms")
	writeFile(t, filepath.Join(d.mnt, "seed"), []byte("seed"))
	must(t, repo, "commit", "--allow-empty", "-m", "first")
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for w := range 2 {
		writeLoop(t, d.mnt, w, stop, &writers)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var committed []string
	var errs []error
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			var out string
			switch i % 3 {
			case 0:
				r := ipfrs(t, repo, "commit", "--allow-empty", "-m", fmt.Sprint("commit ", i))
				out, err = strings.TrimSpace(r.stdout), errors.Join(r.err, errorIf(r.stderr))
			case 1:
				r := ipfrs(t, repo, "tag", fmt.Sprint("t", i))
				err = errors.Join(r.err, errorIf(r.stderr))
			case 2:
				err = os.Mkdir(filepath.Join(d.mnt, ".versions", "tags", fmt.Sprint("m", i)), 0o755)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%d: %w", i, err))
			} else if out != "" {
				committed = append(committed, out)
			}
		}()
	}
	wg.Wait()
	close(stop)
	writers.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of 32 failed: %v", len(errs), errors.Join(errs...))
	}
	inLog := logCIDs(t, repo)
	for _, c := range committed {
		if !inLog[c] {
			t.Errorf("commit %s returned success but is not in the log", c)
		}
	}
	tags := strings.Split(strings.TrimSpace(must(t, repo, "tag")), "\n")
	if len(tags) != 21 {
		t.Errorf("%d tags, want 21:\n%s", len(tags), strings.Join(tags, "\n"))
	}
	for _, line := range tags {
		if f := strings.Fields(line); len(f) != 2 || !inLog[f[1]] {
			t.Errorf("tag line %q: its commit is not in the log", line)
		}
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}

func errorIf(stderr string) error {
	if s := strings.TrimSpace(stderr); s != "" {
		return errors.New(s)
	}
	return nil
}

// SIGTERM while the daemon commits, collects garbage, autocommits or runs
// a control-socket command: it exits with status 0, the mount is gone, the
// repo verifies, and every commit that returned is in the log.
func TestSIGTERMDuringWork(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		// work runs until stop is closed; it returns the commits that
		// returned success.
		work func(t *testing.T, repo, mnt string, stop <-chan struct{}) []string
	}{
		{"commit", nil, func(t *testing.T, repo, mnt string, stop <-chan struct{}) []string {
			var done []string
			for i := 0; ; i++ {
				select {
				case <-stop:
					return done
				default:
				}
				r := ipfrs(t, repo, "commit", "--allow-empty", "-m", fmt.Sprint(i))
				if r.err == nil {
					done = append(done, strings.TrimSpace(r.stdout))
				}
			}
		}},
		{"gc", []string{"--gc-interval", "10ms"}, func(t *testing.T, repo, mnt string, stop <-chan struct{}) []string {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				ipfrs(t, repo, "gc", "-q")
			}
		}},
		{"autocommit", []string{"--autocommit", "10ms"}, func(t *testing.T, repo, mnt string, stop <-chan struct{}) []string {
			<-stop
			return nil
		}},
		{"control command", nil, func(t *testing.T, repo, mnt string, stop <-chan struct{}) []string {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				ipfrs(t, repo, "status")
				ipfrs(t, repo, "diff")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := t.TempDir()
			d := startMount(t, repo, tc.flags...)
			writeFile(t, filepath.Join(d.mnt, "seed"), randomBytes(1, 1<<20))
			must(t, repo, "commit", "--allow-empty", "-m", "seed")
			stop := make(chan struct{})
			var writers sync.WaitGroup
			writeLoop(t, d.mnt, 0, stop, &writers)
			var mu sync.Mutex
			var committed []string
			var workers sync.WaitGroup
			for range 2 {
				workers.Add(1)
				go func() {
					defer workers.Done()
					c := tc.work(t, repo, d.mnt, stop)
					mu.Lock()
					committed = append(committed, c...)
					mu.Unlock()
				}()
			}
			time.Sleep(time.Second)
			close(stop)
			if err := d.stop(); err != nil {
				t.Fatal(err)
			}
			workers.Wait()
			writers.Wait()
			must(t, repo, "verify")
			inLog := logCIDs(t, repo)
			for _, c := range committed {
				if !inLog[c] {
					t.Errorf("commit %s returned success but is not in the log", c)
				}
			}
		})
	}
}
