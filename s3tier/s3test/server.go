// Package s3test runs a real S3 server (VersityGW over a POSIX directory)
// on 127.0.0.1 for tests: the tier is tested against the S3 API as a
// server implements it, not against a mock.
package s3test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Credentials the server is started with.
const (
	AccessKey = "ipfrstest"
	SecretKey = "ipfrstest-secret-key"
)

// Server is a running VersityGW. Kill and Start stop and start the same
// server (same port, same data) to test outages.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	Addr string // 127.0.0.1:port
	cmd  *exec.Cmd
	log  *os.File
}

// Binary finds versitygw: $IPFRS_VERSITYGW, bin/versitygw of the repo
// (scripts/setup.sh installs it there), $PATH, then $GOPATH/bin.
func Binary() (string, error) {
	if p := os.Getenv("IPFRS_VERSITYGW"); p != "" {
		return p, nil
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cands := []string{filepath.Join(root, "bin", "versitygw")}
	if p, err := exec.LookPath("versitygw"); err == nil {
		cands = append(cands, p)
	}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, "go", "bin", "versitygw"))
	}
	for _, c := range cands {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("versitygw not found (run scripts/setup.sh, or set IPFRS_VERSITYGW)")
}

// Start runs a server on a free port with its data in a temp dir; the
// test's cleanup stops it. Without the binary the test is skipped, except
// in CI (CI=true), where it fails.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{t: t, bin: bin, dir: t.TempDir(), Addr: addr}
	if err := os.MkdirAll(filepath.Join(s.dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	s.Restart()
	return s
}

// Env sets the AWS credentials of the server in the test's environment
// (clients read them from there, as users' would).
func (s *Server) Env(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
}

// URL is the tier URL of bucket/prefix on this server.
func (s *Server) URL(bucket, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=http://%s", bucket, prefix, s.Addr)
}

// DataDir is the directory under which the server keeps buckets as
// directories and objects as files.
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }

// Restart starts the server (again) and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("s3test: server already running")
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, "--port", s.Addr, "--access", AccessKey, "--secret", SecretKey,
		"--quiet", "posix", s.DataDir())
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		s.t.Fatal(err)
	}
	s.cmd, s.log = cmd, log
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
			s.t.Fatalf("s3test: versitygw did not answer on %s: %v\n%s", s.Addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL (an outage, not a shutdown).
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.log.Close()
	s.cmd, s.log = nil, nil
}
