package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// How long a daemon may take to mount, or to exit after it was told to stop.
// These only keep a broken daemon from hanging the run; nothing asserts on
// speed.
const (
	mountReadyWait = 20 * time.Second
	daemonExitWait = 60 * time.Second
)

// inCI reports whether missing tools must fail the run instead of skipping.
func inCI() bool { return os.Getenv("CI") == "true" }

// requireFUSE skips the test where the kernel offers no FUSE (fails in CI).
func requireFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if inCI() {
			t.Fatalf("FUSE is not available: %v", err)
		}
		t.Skipf("FUSE is not available: %v", err)
	}
	requireProgram(t, "fusermount3")
}

// requireProgram returns the path of an installed program, skipping the test
// where it is missing (failing in CI, where the set-up installs it).
func requireProgram(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if inCI() {
			t.Fatalf("%s is not installed: %v", name, err)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// lockedBuffer collects a daemon's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mountDaemon is one running `ipfrs-mount mount`.
type mountDaemon struct {
	mnt    string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan struct{} // closed when the process has been waited for
	err    error         // its exit status, valid once exited is closed
	once   sync.Once
}

// startMount runs `ipfrs-mount --repo repo mount MNT [flags]` on a fresh
// mount point and waits until the kernel lists it as a FUSE mount. Cleanup
// always stops the daemon and removes the mount, even when the test failed.
func startMount(t *testing.T, repo string, flags ...string) *mountDaemon {
	t.Helper()
	requireFUSE(t)
	// mountinfo lists resolved paths.
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &mountDaemon{mnt: mnt, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(binary, append([]string{"--repo", repo, "mount", mnt}, flags...)...)
	d.cmd.Stdout = d.stderr
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting ipfrs-mount mount: %v", err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	// Registered after t.TempDir, so it runs before the mount point is removed.
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("stopping the mount at cleanup: %v", err)
		} else if t.Failed() {
			t.Logf("ipfrs-mount mount output:\n%s", d.stderr.String())
		}
		if err := unmountDead(t, d.mnt); err != nil {
			t.Errorf("removing the mount at cleanup: %v", err)
		}
	})

	deadline := time.Now().Add(mountReadyWait)
	for !isFUSEMount(t, mnt) {
		select {
		case <-d.exited:
			t.Fatalf("ipfrs-mount mount exited before mounting (%v):\n%s", d.err, d.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after %v:\n%s", mnt, mountReadyWait, d.stderr.String())
		}
	}
	return d
}

// mountRepo mounts repo's working tree. stop unmounts it the way a user
// does (SIGTERM) and reports anything but a clean exit; calling it is
// optional, cleanup stops the daemon anyway.
func mountRepo(t *testing.T, repo string) (mnt string, stop func() error) {
	t.Helper()
	d := startMount(t, repo)
	return d.mnt, d.stop
}

// mountRepoKill9 mounts repo for a crash test: kill9 SIGKILLs the daemon
// and waits for it to die. The dead mount stays until the test's own I/O on
// it has ended; then unmountDead removes it (cleanup does, at the latest).
func mountRepoKill9(t *testing.T, repo string) (mnt string, kill9 func()) {
	t.Helper()
	d := startMount(t, repo)
	return d.mnt, func() {
		d.once.Do(func() {
			d.cmd.Process.Signal(syscall.SIGKILL)
			<-d.exited
		})
	}
}

// stop unmounts the way a user does, with SIGTERM.
func (d *mountDaemon) stop() error {
	return d.stopBy("SIGTERM", func() error { return d.cmd.Process.Signal(syscall.SIGTERM) })
}

// stopBy stops the daemon with do and waits for a clean exit: status 0 and
// the mount gone. It runs once; later calls return nil. A daemon that does
// not exit is killed and a mount left behind is removed, so nothing
// outlives the test.
func (d *mountDaemon) stopBy(how string, do func() error) error {
	var errs []error
	d.once.Do(func() {
		select {
		case <-d.exited:
			errs = append(errs, fmt.Errorf("daemon exited before it was stopped: %v", d.err))
		default:
			if err := do(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", how, err))
			}
			select {
			case <-d.exited:
				if d.err != nil {
					errs = append(errs, fmt.Errorf("daemon exited with %v after %s", d.err, how))
				}
			case <-time.After(daemonExitWait):
				errs = append(errs, fmt.Errorf("daemon still running %v after %s; killed", daemonExitWait, how))
				d.cmd.Process.Signal(syscall.SIGKILL)
				<-d.exited
			}
		}
		if isMounted(d.mnt) {
			errs = append(errs, fmt.Errorf("%s still mounted after the daemon exited", d.mnt))
			if err := unmountDead(nil, d.mnt); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			errs = append(errs, fmt.Errorf("daemon output:\n%s", d.stderr.String()))
		}
	})
	return errors.Join(errs...)
}

// unmountDead removes a mount whose daemon is gone: fusermount3 -u, then a
// lazy umount if that fails.
func unmountDead(t *testing.T, mnt string) error {
	if !isMounted(mnt) {
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput()
	if err == nil && !isMounted(mnt) {
		return nil
	}
	if t != nil {
		t.Logf("fusermount3 -u %s: %v %s; trying umount -l", mnt, err, out)
	}
	if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("umount -l %s: %v %s", mnt, err, out)
	}
	return nil
}

// mountinfoFSType returns the file-system type mounted at dir according to
// /proc/self/mountinfo, or "" if nothing is.
func mountinfoFSType(dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	fstype := ""
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source super
		pre, post, ok := strings.Cut(s.Text(), " - ")
		fields, rest := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(rest) < 1 {
			continue
		}
		if unescapeMountinfo(fields[4]) == dir {
			fstype = rest[0] // the last match is the one on top
		}
	}
	return fstype, s.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isMounted(dir string) bool {
	fstype, err := mountinfoFSType(dir)
	return err == nil && fstype != ""
}

func isFUSEMount(t *testing.T, dir string) bool {
	t.Helper()
	fstype, err := mountinfoFSType(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fstype == "fuse" || strings.HasPrefix(fstype, "fuse.")
}

// runProgram runs a program in dir and fails the test with its output if it
// fails.
func runProgram(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}
