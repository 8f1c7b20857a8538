package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binary is the ipfrs-mount built once for all tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ipfrs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ipfrs-mount")
	args := []string{"build", "-o", binary}
	if os.Getenv("IPFRS_TEST_RACE") == "1" {
		// The daemon under the race detector: a race makes it exit with
		// status 66, which the tests' clean-stop checks report.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/ipfrs-mount")...)
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ipfrs-mount:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what one command run printed.
type result struct {
	stdout, stderr string
	err            error
}

// ipfrs runs the binary against repo.
func ipfrs(t *testing.T, repo string, args ...string) result {
	t.Helper()
	return ipfrsIn(t, "", repo, args...)
}

// ipfrsIn runs the binary against repo in the working directory dir.
func ipfrsIn(t *testing.T, dir, repo string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"--repo", repo}, args...)...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return result{out.String(), errb.String(), err}
}

// must runs the binary and fails the test if it fails.
func must(t *testing.T, repo string, args ...string) string {
	t.Helper()
	r := ipfrs(t, repo, args...)
	if r.err != nil {
		t.Fatalf("ipfrs-mount %s: %v\n%s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// formula generates the Kubo-compatibility test files of the issue.
func formula(name string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		j := uint64(i)
		switch name {
		case "lin":
			b[i] = byte((j*31 + 7) % 256)
		case "sq":
			b[i] = byte((j*j + j/7) % 256)
		}
	}
	return b
}
