package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfrs/ipfrs-mount/repository"
)

// runIn runs a command line in this process against repo.
func runIn(t *testing.T, cwd string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = run(context.Background(), args, env{stdout: &out, stderr: &errb, cwd: cwd})
	return out.String(), errb.String(), err
}

// The history commands, run unmounted: each opens and closes the repo.
func TestHistoryCommandsUnmounted(t *testing.T) {
	repo := t.TempDir()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		args    []string
		wantErr string // "" : must succeed
		stdout  string // a substring stdout must contain
	}{
		{[]string{"commit", "-m", "first"}, "", "bafyrei"},
		{[]string{"commit", "-m", "unchanged"}, "nothing to commit", ""},
		{[]string{"tag", "v1"}, "", ""},
		{[]string{"tag", "v1"}, "already exists", ""},
		{[]string{"tag", "bad/name"}, "invalid branch or tag name", ""},
		{[]string{"branch", "side"}, "", ""},
		{[]string{"branch"}, "", "* main"},
		{[]string{"switch", "side"}, "", ""},
		{[]string{"branch"}, "", "* side"},
		{[]string{"switch", "nope"}, "no branch", ""},
		{[]string{"log", "--json"}, "", `"message":"first"`},
		{[]string{"merge", "v1"}, "", ""},
		{[]string{"reset", "v1"}, "only `reset --hard REF`", ""},
		{[]string{"reset", "--hard", "v1"}, "", ""},
		{[]string{"branch", "-d", "side"}, "current branch", ""},
		{[]string{"tag", "-d", "v1"}, "", ""},
		{[]string{"tag"}, "", ""},
		{[]string{"gc", "-q", "--json"}, "", `"removed"`},
	}
	for _, s := range steps {
		args := append([]string{"--repo", repo}, s.args...)
		out, errOut, err := runIn(t, src, args...)
		line := strings.Join(s.args, " ")
		switch {
		case s.wantErr == "" && err != nil:
			t.Fatalf("%s: %v\n%s", line, err, errOut)
		case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
			t.Fatalf("%s: %v, want an error with %q", line, err, s.wantErr)
		case !strings.Contains(out, s.stdout):
			t.Fatalf("%s: stdout %q, want %q in it", line, out, s.stdout)
		}
	}
}

// A command forwarded to the daemon carries the whole command line, global
// flags included; the daemon's answer is the command's.
func TestForwardSendsTheWholeCommandLine(t *testing.T) {
	dir := t.TempDir()
	r, err := repository.Open(dir, repository.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make(chan repository.Request, 1)
	err = r.ServeControl(func(ctx context.Context, req repository.Request, stdout, stderr io.Writer) int {
		got <- req
		fmt.Fprint(stdout, "from the daemon")
		fmt.Fprint(stderr, "why")
		return 3
	})
	if err != nil {
		t.Fatal(err)
	}
	cwd := t.TempDir()
	args := []string{"--repo", dir, "log", "-n", "1"}
	out, errOut, err := runIn(t, cwd, args...)
	req := <-got
	if !slices.Equal(req.Args, args) || req.Cwd != cwd {
		t.Fatalf("the daemon got %q in %q, want %q in %q", req.Args, req.Cwd, args, cwd)
	}
	if out != "from the daemon" || errOut != "why" || report(io.Discard, err) != 3 {
		t.Fatalf("stdout %q, stderr %q, exit status %d; want the daemon's", out, errOut, report(io.Discard, err))
	}
	// Local commands are never forwarded.
	if _, _, err := runIn(t, cwd, "--repo", dir, "mount"); err == nil || !strings.Contains(err.Error(), "MOUNTPOINT") {
		t.Fatalf("mount without a mount point: %v", err)
	}
	select {
	case req := <-got:
		t.Fatalf("mount was forwarded: %q", req.Args)
	default:
	}
}

// In the daemon, a command works on the daemon's repo whatever --repo
// says, and mount is refused.
func TestDaemonCommandsUseTheDaemonsRepo(t *testing.T) {
	dir := t.TempDir()
	r, err := repository.Open(dir, repository.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := controlHandler(newRepo(r, true), &daemonState{repo: dir})
	var out, errb bytes.Buffer
	code := h(context.Background(), repository.Request{Args: []string{"--repo", "/nonexistent", "commit", "--allow-empty", "-m", "x"}}, &out, &errb)
	if code != 0 {
		t.Fatalf("commit in the daemon: exit status %d: %s", code, errb.String())
	}
	_, head, err := r.History().Head(context.Background())
	if err != nil || head.String() != strings.TrimSpace(out.String()) {
		t.Fatalf("HEAD of the daemon's repo is %s (%v), the commit printed %q", head, err, out.String())
	}
	if _, err := os.Stat("/nonexistent"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("--repo /nonexistent was created: %v", err)
	}
	errb.Reset()
	if code := h(context.Background(), repository.Request{Args: []string{"mount", "/x"}}, io.Discard, &errb); code == 0 ||
		!strings.Contains(errb.String(), "not over the control socket") {
		t.Fatalf("mount over the control socket: exit status %d, %q", code, errb.String())
	}
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{exitError(5), 5, ""},
		{fmt.Errorf("wrapped: %w", exitError(2)), 2, ""},
		{usageError{errors.New("no command")}, 1, ""},
		{errors.New("two\nlines"), 1, "ipfrs-mount: two; lines\n"},
	} {
		var b bytes.Buffer
		if code := report(&b, tc.err); code != tc.code || b.String() != tc.out {
			t.Errorf("report(%v) = %d, %q; want %d, %q", tc.err, code, b.String(), tc.code, tc.out)
		}
	}
}

// A command run while another process has the repo open for writing waits
// for it instead of failing: two unmounted commits at once both succeed.
func TestCommandWaitsForTheRepoLock(t *testing.T) {
	dir := t.TempDir()
	holder, err := repository.Open(dir, repository.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := runIn(t, "", "--repo", dir, "commit", "--allow-empty", "-m", "waited")
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("commit returned while the repo was held: %v", err)
	default:
	}
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("commit after the holder closed: %v", err)
	}
	out, _, err := runIn(t, "", "--repo", dir, "log")
	if err != nil || !strings.Contains(out, "waited") {
		t.Fatalf("log: %v %q", err, out)
	}
}
