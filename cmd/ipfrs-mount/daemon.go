package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipfrs/ipfrs-mount/metrics"
	"github.com/ipfrs/ipfrs-mount/repository"
	"github.com/ipfrs/ipfrs-mount/s3tier"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// Files a mount keeps in its repo.
const (
	pidFileName = "ipfrs-mount.pid" // the serving process's pid, while mounted
	logFileName = "ipfrs-mount.log" // the daemon's log (JSON lines)
)

// daemonChildEnv marks the process `mount --daemon` started: it mounts,
// reports on stderr (a pipe to its parent) until the mount answers, then
// says readyLine and moves stderr to the log file.
const (
	daemonChildEnv = "IPFRS_MOUNT_DAEMON_CHILD"
	readyLine      = "\x00ready"
)

// daemonState is what the process serving a mount knows about it: status,
// unmount and /health ask it.
type daemonState struct {
	repo, mountpoint string
	pid              int
	dev              uint64 // the mount's device: tells the mount from the directory under it
	started          time.Time
	logFile          string // "" when logging to stderr
	stop             context.CancelFunc
	store            *store.Badger
	tree             *worktree.Tree
	mount            *repository.Mount
	s3               *s3tier.Tier // nil without --s3
}

// detachDaemon starts this mount again as a background process and returns
// once its mount answers (nil), or with what made it fail.
func (a *app) detachDaemon(ctx context.Context, dir, mnt string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, logFileName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.Command(exe, a.args...)
	cmd.Env = append(os.Environ(), daemonChildEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("starting the daemon: %w", err)
	}
	pw.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	go func() {
		<-ctx.Done()
		pr.Close() // stop waiting; the daemon goes on
	}()
	// Relay what the daemon says until it is ready or gone.
	r := bufio.NewReader(pr)
	for {
		line, err := r.ReadString('\n')
		if strings.TrimSuffix(line, "\n") == readyLine {
			fmt.Fprintf(a.stderr, "ipfrs-mount: daemon pid %d, log %s\n", cmd.Process.Pid, logPath)
			return nil
		}
		io.WriteString(a.stderr, line)
		if err != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := <-exited; err != nil {
		return exitError(exitCode(err))
	}
	return fmt.Errorf("the daemon exited before its mount was ready (log: %s)", logPath)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return ee.ExitCode()
	}
	return 1
}

// daemonChild reports whether this process is the background half of
// `mount --daemon`.
func daemonChild() bool { return os.Getenv(daemonChildEnv) == "1" }

// mountLogger is the mount's logger: JSON lines in the repo's log file for
// the daemon (info and up by default), text on stderr in the foreground
// (warnings and up by default).
func (a *app) mountLogger(dir, level string) (*slog.Logger, string, func(), error) {
	var lv slog.Level
	if level == "" {
		level = "warn"
		if daemonChild() {
			level = "info"
		}
	}
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, "", nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if !daemonChild() {
		return slog.New(slog.NewTextHandler(a.stderr, opts)), "", func() {}, nil
	}
	path := filepath.Join(dir, logFileName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, "", nil, fmt.Errorf("log file: %w", err)
	}
	return slog.New(slog.NewJSONHandler(f, opts)), path, func() { f.Close() }, nil
}

// daemonReady tells the parent of `mount --daemon` that the mount answers,
// then sends stderr (and so panics) to the log file: the parent stops
// listening.
func (a *app) daemonReady(logPath string) {
	if !daemonChild() {
		return
	}
	fmt.Fprintln(os.Stderr, readyLine)
	if f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		unix.Dup2(int(f.Fd()), 2)
		f.Close()
	}
	a.stderr = io.Discard // the log has it all
}

// alreadyMounted fails when a daemon serves the repo at dir.
func alreadyMounted(ctx context.Context, dir string) error {
	var out, errb bytes.Buffer
	done, err := repository.Forward(ctx, dir, repository.Request{Args: []string{"status", "--json"}}, &out, &errb)
	if !done {
		return nil
	}
	var st statusOut
	if err != nil || json.Unmarshal(out.Bytes(), &st) != nil || !st.Mounted {
		return fmt.Errorf("repo %s is in use by a mount daemon (its control socket answers)", dir)
	}
	return fmt.Errorf("repo %s is already mounted at %s by pid %d; run 'ipfrs-mount unmount %s' first",
		dir, st.Mountpoint, st.PID, st.Mountpoint)
}

// recoverStale cleans up after a daemon of this repo that died: its pid
// file, and its dead FUSE mounts ("transport endpoint is not connected").
// It runs once this process holds the repo's lock, so no live daemon
// serves the repo. It returns what it did, for the user.
func recoverStale(dir, mnt string) ([]string, error) {
	var did []string
	pidFile := filepath.Join(dir, pidFileName)
	if b, err := os.ReadFile(pidFile); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err := os.Remove(pidFile); err != nil {
			return did, fmt.Errorf("stale pid file: %w", err)
		}
		did = append(did, fmt.Sprintf("the previous mount daemon (pid %d) did not stop cleanly; removed its stale pid file", pid))
	}
	ms, err := mounts()
	if err != nil {
		return did, err
	}
	name := fsName(dir)
	for _, m := range ms {
		if m.fstype != fsType || (m.source != name || name == "ipfrs") && m.mountpoint != mnt {
			continue
		}
		_, err := probe(m.mountpoint, 2*time.Second)
		if m.source != name && !isDeadConn(err) {
			// Another repo's live mount on our mount point.
			return did, fmt.Errorf("%s is already a mount point of %s", mnt, m.source)
		}
		why := "its daemon is gone"
		if err != nil {
			why = err.Error()
		}
		if err := detach(m.mountpoint); err != nil {
			return did, fmt.Errorf("removing the dead mount at %s: %w", m.mountpoint, err)
		}
		did = append(did, fmt.Sprintf("removed the dead mount at %s left by a daemon that died (%s)", m.mountpoint, why))
	}
	return did, nil
}

func writePidFile(dir string) error {
	p := filepath.Join(dir, pidFileName)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func readPidFile(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, pidFileName))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// checkMount confirms that mnt answers as a FUSE mount and returns its
// device.
func checkMount(mnt string) (uint64, error) {
	st, err := probe(mnt, 10*time.Second)
	if err != nil {
		return 0, fmt.Errorf("the mount does not answer: %w", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(mnt, &fs); err != nil {
		return 0, fmt.Errorf("the mount does not answer: %w", err)
	}
	if fs.Type != unix.FUSE_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a FUSE mount after mounting", mnt)
	}
	return st.Dev, nil
}

// healthChecks are what /health asks: a store read and a stat of the mount
// point that must reach this mount.
func (d *daemonState) healthChecks() []metrics.Check {
	return []metrics.Check{
		{Name: "store", Run: func(ctx context.Context) error {
			_, err := d.store.GetMeta(ctx, "health")
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			return err
		}},
		{Name: "fuse", Run: func(ctx context.Context) error {
			// statfs makes a round trip to this daemon; stat tells whether
			// the path still leads to this mount.
			var st unix.Stat_t
			var fs unix.Statfs_t
			if err := unix.Stat(d.mountpoint, &st); err != nil {
				return fmt.Errorf("stat %s: %w", d.mountpoint, err)
			}
			if st.Dev != d.dev {
				return fmt.Errorf("%s is no longer this mount (unmounted or detached)", d.mountpoint)
			}
			if err := unix.Statfs(d.mountpoint, &fs); err != nil {
				return fmt.Errorf("statfs %s: %w", d.mountpoint, err)
			}
			return nil
		}},
	}
}
