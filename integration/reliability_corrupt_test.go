package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// flipInValueLog alters one byte of data where it is stored: it finds a run
// of data's bytes in a value-log file of the stopped repo and flips a bit.
// It returns the file it changed.
func flipInValueLog(t *testing.T, repo string, data []byte, at int) string {
	t.Helper()
	probe := data[at : at+64]
	vlogs, _ := filepath.Glob(filepath.Join(repo, "blocks", "*.vlog"))
	sort.Strings(vlogs)
	for _, v := range vlogs {
		b, err := os.ReadFile(v)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, probe); i >= 0 {
			f, err := os.OpenFile(v, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{b[i+10] ^ 0x01}, int64(i+10)); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatal("the file's bytes are not in any value-log file")
	return ""
}

// readChecked reads the whole file in 128 KiB preads and compares every
// byte returned with want; it returns how many reads failed with EIO.
// Any other error, or any wrong byte, fails the test.
func readChecked(t *testing.T, path string, want []byte) (eio int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 128<<10)
	for off := 0; off < len(want); off += len(buf) {
		n, err := f.ReadAt(buf, int64(off))
		if !bytes.Equal(buf[:n], want[off:off+n]) {
			t.Fatalf("%s: a read at %d served wrong bytes", path, off)
		}
		switch {
		case errors.Is(err, syscall.EIO):
			eio++
		case err != nil && off+n < len(want):
			t.Fatalf("%s: read at %d: %v", path, off, err)
		}
	}
	return eio
}

// corruption alters a stored block with the daemon stopped, once in an
// older value-log file and once in the newest one (which Badger's
// read-write open scans and cuts at the first bad entry), then mounts:
// reads of the altered range fail with EIO, nothing serves wrong bytes,
// other files read back whole, and verify names the block.
func corruption(t *testing.T, cfg reliabilityConfig, c *tally) {
	for _, tt := range []struct {
		name string
		// reopen opens the repo read-write once more after the writes, so
		// that a newer value-log file exists before the bytes are altered.
		reopen bool
	}{
		{"older value log", true},
		{"newest value log", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			repo := filepath.Join(t.TempDir(), "repo")
			victim := randomBytes(61, 8<<20)
			other := randomBytes(62, 8<<20)
			d := suiteMount(t, c, repo)
			writeFile(t, filepath.Join(d.mnt, "victim.bin"), victim)
			writeFile(t, filepath.Join(d.mnt, "other.bin"), other) // stored after the victim
			victimCID, otherCID := cidOf(t, filepath.Join(d.mnt, "victim.bin")), cidOf(t, filepath.Join(d.mnt, "other.bin"))
			if err := d.stop(); err != nil {
				t.Fatal(err)
			}
			if tt.reopen {
				small := filepath.Join(t.TempDir(), "small")
				writeFile(t, small, []byte("a read-write open makes a new value-log file\n"))
				must(t, repo, "add", "-Q", small)
			}
			flipInValueLog(t, repo, victim, 3<<20)
			c.fault(1)
			c.run()

			r := ipfrs(t, repo, "verify")
			if r.err == nil || !strings.Contains(r.stdout, "corrupt bafkrei") || strings.Count(r.stdout, "\n") != 1 {
				t.Fatalf("verify before mounting: err %v stdout %q stderr %q", r.err, r.stdout, r.stderr)
			}
			named := strings.TrimSpace(r.stdout)

			if !tt.reopen {
				// A read-write open would cut the value log at the altered
				// entry, losing other.bin with it: the mount is refused, and
				// read-only commands serve what is intact.
				m := ipfrs(t, repo, "mount", t.TempDir())
				if m.err == nil || !strings.Contains(m.stderr, "damaged value log") {
					t.Fatalf("mount of a repo whose newest value log is damaged: %v %q", m.err, m.stderr)
				}
				if got := must(t, repo, "cat", otherCID); got != string(other) {
					t.Fatal("cat of the intact file differs")
				}
				r := ipfrs(t, repo, "cat", victimCID)
				if r.err == nil || !strings.Contains(r.stderr, "fail their checksum") || !bytes.HasPrefix(victim, []byte(r.stdout)) {
					t.Fatalf("cat of the damaged file: %v %q", r.err, r.stderr)
				}
				if r := ipfrs(t, repo, "verify"); strings.TrimSpace(r.stdout) != named {
					t.Fatalf("verify after the refused mount: %q, want %q", r.stdout, named)
				}
				return
			}
			d = suiteMount(t, c, repo)
			if eio := readChecked(t, filepath.Join(d.mnt, "victim.bin"), victim); eio == 0 {
				t.Error("victim.bin read back without an error although a block of it was altered")
			}
			if eio := readChecked(t, filepath.Join(d.mnt, "other.bin"), other); eio != 0 {
				t.Errorf("other.bin: %d reads failed; its blocks were not touched", eio)
			}
			c.op(2 * (8 << 20) / (128 << 10))
			if err := d.stop(); err != nil {
				t.Fatal(err)
			}
			r = ipfrs(t, repo, "verify")
			if r.err == nil || strings.TrimSpace(r.stdout) != named {
				t.Fatalf("verify after the mount: err %v, stdout %q, want %q", r.err, r.stdout, named)
			}
		})
	}
}
