package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The mount helper, installed by `ipfrs-mount install`, mounts the way
// mount(8) runs it for an fstab line: first called directly as mount would
// (`mount.fuse.ipfrs REPO MNT -o OPTS`), then through `mount -t fuse.ipfrs`
// itself, which only looks for helpers in /sbin: the test links
// /sbin/mount.fuse.ipfrs for that part and removes it after (skipped, and
// said, when one exists already or /sbin is not writable).
func TestFstabHelper(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	bindir, sbindir := filepath.Join(dir, "bin"), filepath.Join(dir, "sbin")
	out := must(t, repo, "install", "--bindir", bindir, "--sbindir", sbindir)
	helper := filepath.Join(sbindir, "mount.fuse.ipfrs")
	if target, err := os.Readlink(helper); err != nil || target != filepath.Join(bindir, "ipfrs-mount") {
		t.Fatalf("install: %s -> %q %v\n%s", helper, target, err, out)
	}

	mnt := newMountpoint(t)
	cmd := exec.Command(helper, repo, mnt, "-o", "rw,allow_other,noatime,metrics=127.0.0.1:0,log_level=debug")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", helper, err, b)
	}
	pid := daemonPID(t, repo)
	t.Cleanup(func() { stopDaemon(t, repo, mnt, pid) })
	if fstype, _ := mountinfoFSType(mnt); fstype != "fuse.ipfrs" {
		t.Fatalf("helper mount: type %q", fstype)
	}
	if !strings.Contains(mountinfoLines(t, mnt), " - fuse.ipfrs "+repo+" ") || !strings.Contains(mountinfoLines(t, mnt), "allow_other") {
		t.Errorf("mountinfo does not name the repo or allow_other:\n%s", mountinfoLines(t, mnt))
	}
	if st := repoStatus(t, repo); st.MetricsAddr == "" || st.PID != pid {
		t.Errorf("status of the helper's mount: %+v", st)
	}
	writeFile(t, filepath.Join(mnt, "fstab.txt"), []byte("mounted by the helper\n"))
	// umount(8), as for any fstab entry; the daemon flushes and exits.
	if b, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v %s", err, b)
	}
	waitExit(t, pid)

	// Through mount(8).
	const sbinHelper = "/sbin/mount.fuse.ipfrs"
	if _, err := os.Lstat(sbinHelper); err == nil {
		t.Skipf("%s exists already; not replacing it, so mount -t is not tried", sbinHelper)
	}
	if err := os.Symlink(filepath.Join(bindir, "ipfrs-mount"), sbinHelper); err != nil {
		t.Skipf("cannot link %s (%v); mount -t is not tried", sbinHelper, err)
	}
	t.Cleanup(func() { os.Remove(sbinHelper) })
	if b, err := exec.Command("mount", "-t", "fuse.ipfrs", repo, mnt, "-o", "allow_other,log_level=debug").CombinedOutput(); err != nil {
		t.Fatalf("mount -t fuse.ipfrs: %v\n%s", err, b)
	}
	pid = daemonPID(t, repo)
	t.Cleanup(func() { stopDaemon(t, repo, mnt, pid) })
	if got, err := os.ReadFile(filepath.Join(mnt, "fstab.txt")); err != nil || string(got) != "mounted by the helper\n" {
		t.Fatalf("file after mount -t: %q %v", got, err)
	}
	if b, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v %s", err, b)
	}
	waitExit(t, pid)
}
