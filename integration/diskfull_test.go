package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// With the repo on a small filesystem, writes fail with ENOSPC instead of
// killing the daemon (Badger writes through memory mappings, where a full
// disk is SIGBUS); what was stored stays intact, and once there is room
// again, writing works.
// It is part of TestReliability.
func diskFull(t *testing.T, cfg reliabilityConfig, c *tally) {
	if os.Geteuid() != 0 {
		if inCI() {
			t.Fatal("the disk-full test needs root to mount a tmpfs")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	fsdir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=600m", "tmpfs", fsdir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", fsdir).Run() })
	repo := filepath.Join(fsdir, "repo")
	d := suiteMount(t, c, repo)
	mnt, stop := d.mnt, d.stop
	var stored [][]byte
	var full bool
	for i := range 5 {
		data := randomBytes(uint64(200+i), 150<<20)
		err := os.WriteFile(filepath.Join(mnt, "f"+string(rune('0'+i))), data, 0o644)
		c.op(1)
		if errors.Is(err, syscall.ENOSPC) {
			c.fault(1)
			full = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, data)
	}
	if !full {
		t.Fatal("750 MB fitted a 600 MB filesystem")
	}
	for i, want := range stored {
		if got, err := os.ReadFile(filepath.Join(mnt, "f"+string(rune('0'+i)))); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("f%d after the disk filled: %v", i, err)
		}
	}
	if out, err := exec.Command("mount", "-o", "remount,size=1200m", fsdir).CombinedOutput(); err != nil {
		t.Fatalf("grow tmpfs: %v %s", err, out)
	}
	more := randomBytes(300, 150<<20)
	if err := os.WriteFile(filepath.Join(mnt, "after"), more, 0o644); err != nil {
		t.Fatalf("writing once there is room again: %v", err)
	}
	c.runWith(len(stored) + 1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}
