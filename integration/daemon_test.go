package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// status is the stable part of `status --json` the tests read.
type status struct {
	Repo        string  `json:"repo"`
	Mounted     bool    `json:"mounted"`
	Mountpoint  string  `json:"mountpoint"`
	PID         int     `json:"pid"`
	MetricsAddr string  `json:"metrics_addr"`
	LogFile     string  `json:"log_file"`
	Blocks      int64   `json:"blocks"`
	TreeFiles   int64   `json:"tree_files"`
	TreeBytes   uint64  `json:"tree_bytes"`
	DedupRatio  float64 `json:"dedup_ratio"`
	OpenFiles   int64   `json:"open_files"`
	LastCommit  *struct {
		CID string `json:"cid"`
	} `json:"last_commit"`
	Hot *struct {
		Mode  string `json:"mode"`
		Files int    `json:"files"`
	} `json:"hot"`
	Prefetch *struct {
		FetchedBytes    int64 `json:"fetched_bytes"`
		BudgetBytes     int64 `json:"budget_bytes"`
		BudgetPeakBytes int64 `json:"budget_peak_bytes"`
	} `json:"prefetch"`
	StalePID int `json:"stale_pid"`
}

func repoStatus(t *testing.T, repo string) status {
	t.Helper()
	var s status
	out := must(t, repo, "status", "--json")
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s
}

// newMountpoint makes an empty directory to mount on (symlinks resolved, as
// mountinfo lists them).
func newMountpoint(t *testing.T) string {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// daemonPID reads the pid file of the daemon serving repo.
func daemonPID(t *testing.T, repo string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "ipfrs-mount.pid"))
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %q: %v", b, err)
	}
	return pid
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func waitExit(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(daemonExitWait)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon %d still running after %v", pid, daemonExitWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDaemon runs `mount --daemon`, which returns once the mount answers,
// and returns the daemon's pid. Cleanup stops a daemon still running (and
// kills it, it being the one this test started, if it does not stop) and
// removes any mount left.
func startDaemon(t *testing.T, repo, mnt string, extra ...string) int {
	t.Helper()
	requireFUSE(t)
	r := ipfrs(t, repo, append([]string{"mount", "--daemon", mnt}, extra...)...)
	if r.err != nil {
		t.Fatalf("mount --daemon: %v\n%s", r.err, r.stderr)
	}
	if !isFUSEMount(t, mnt) {
		t.Fatalf("mount --daemon returned before %s was mounted:\n%s", mnt, r.stderr)
	}
	pid := daemonPID(t, repo)
	t.Cleanup(func() { stopDaemon(t, repo, mnt, pid) })
	return pid
}

func stopDaemon(t *testing.T, repo, mnt string, pid int) {
	if processAlive(pid) {
		if r := ipfrs(t, repo, "unmount", mnt); r.err != nil {
			t.Errorf("unmount at cleanup: %v %s", r.err, r.stderr)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := unmountDead(t, mnt); err != nil {
		t.Errorf("removing the mount at cleanup: %v", err)
	}
}

// A daemon mount: the command returns once mounted, status reports it, a
// second mount is refused with where the repo is mounted, and unmount
// flushes and stops it.
func TestDaemonStartStatusUnmount(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	mnt := newMountpoint(t)
	pid := startDaemon(t, repo, mnt)
	data := randomBytes(5, 1<<20+3)
	writeFile(t, filepath.Join(mnt, "a", "w.bin"), data)
	writeFile(t, filepath.Join(mnt, "copy.bin"), data)
	must(t, repo, "commit", "-m", "first")

	f, err := os.Open(filepath.Join(mnt, "copy.bin"))
	if err != nil {
		t.Fatal(err)
	}
	st := repoStatus(t, repo)
	f.Close()
	want := status{Repo: repo, Mounted: true, Mountpoint: mnt, PID: pid,
		LogFile: filepath.Join(repo, "ipfrs-mount.log"), TreeFiles: 2, TreeBytes: 2 * uint64(len(data)), OpenFiles: 1}
	got := st
	got.Blocks, got.DedupRatio, got.LastCommit, got.Hot, got.Prefetch = 0, 0, nil, nil, nil
	if got != want {
		t.Errorf("status %+v\nwant %+v", got, want)
	}
	if st.Hot == nil || st.Prefetch == nil {
		t.Errorf("status of a mount with default flags: hot %v, prefetch %v", st.Hot, st.Prefetch)
	}
	if st.LastCommit == nil || st.Blocks == 0 || st.DedupRatio < 1.9 {
		t.Errorf("status: last commit %v, %d blocks, dedup %.2f (two identical files)", st.LastCommit, st.Blocks, st.DedupRatio)
	}
	if text := must(t, repo, "status"); !strings.Contains(text, "mounted:      "+repo+" at "+mnt) {
		t.Errorf("status text:\n%s", text)
	}

	// A second mount of the same repo, elsewhere, says where it is mounted.
	r := ipfrs(t, repo, "mount", "--daemon", newMountpoint(t))
	if r.err == nil || !strings.Contains(r.stderr, "already mounted at "+mnt+" by pid "+strconv.Itoa(pid)) {
		t.Errorf("second mount: %v %q", r.err, r.stderr)
	}

	out := ipfrs(t, repo, "unmount", mnt)
	if out.err != nil || !strings.Contains(out.stderr, "unmounted "+mnt) {
		t.Fatalf("unmount: %v %q", out.err, out.stderr)
	}
	if isMounted(mnt) || processAlive(pid) {
		t.Fatalf("after unmount: mounted %v, daemon running %v", isMounted(mnt), processAlive(pid))
	}
	for _, name := range []string{"ipfrs-mount.pid", "ipfrs.sock"} {
		if _, err := os.Stat(filepath.Join(repo, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after unmount: %v", name, err)
		}
	}
	if st := repoStatus(t, repo); st.Mounted || st.TreeBytes != 2*uint64(len(data)) || st.StalePID != 0 {
		t.Errorf("status unmounted: %+v", st)
	}
	log, err := os.ReadFile(filepath.Join(repo, "ipfrs-mount.log"))
	if err != nil || !strings.Contains(string(log), `"msg":"mounted"`) || !strings.Contains(string(log), `"msg":"unmounted"`) {
		t.Errorf("log file: %v\n%s", err, log)
	}
	// stop is the same command.
	pid = startDaemon(t, repo, mnt)
	if got, _ := os.ReadFile(filepath.Join(mnt, "a", "w.bin")); string(got) != string(data) {
		t.Error("content differs after remount")
	}
	must(t, repo, "stop", mnt)
	if isMounted(mnt) || processAlive(pid) {
		t.Fatal("stop left the mount or the daemon")
	}
}

// After kill -9 of the daemon, the mount point is a dead FUSE connection;
// the next mount cleans it and the stale pid file up, and says so.
func TestDaemonRecoversAfterKill9(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	mnt := newMountpoint(t)
	pid := startDaemon(t, repo, mnt)
	data := randomBytes(9, 300<<10)
	f, err := os.Create(filepath.Join(mnt, "kept.bin"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	syscall.Kill(pid, syscall.SIGKILL) // the daemon this test started
	waitExit(t, pid)
	// The kernel answers ENOTCONN ("transport endpoint is not connected"),
	// or ECONNABORTED while it is still tearing the connection down; once,
	// under the load of the whole suite, a first statfs got EIO: wait for
	// the connection to settle.
	var fs syscall.Statfs_t
	deadErr := syscall.Statfs(mnt, &fs)
	for i := 0; errors.Is(deadErr, syscall.EIO) && i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
		deadErr = syscall.Statfs(mnt, &fs)
	}
	if !errors.Is(deadErr, syscall.ENOTCONN) && !errors.Is(deadErr, syscall.ECONNABORTED) {
		t.Fatalf("statfs of the dead mount: %v, want ENOTCONN", deadErr)
	}
	if st := repoStatus(t, repo); st.Mounted || st.StalePID != pid {
		t.Errorf("status after kill -9: %+v", st)
	}

	r := ipfrs(t, repo, "mount", "--daemon", mnt)
	if r.err != nil {
		t.Fatalf("mount after kill -9: %v\n%s", r.err, r.stderr)
	}
	newPID := daemonPID(t, repo)
	t.Cleanup(func() { stopDaemon(t, repo, mnt, newPID) })
	for _, want := range []string{
		fmt.Sprintf("recovered: the previous mount daemon (pid %d) did not stop cleanly; removed its stale pid file", pid),
		"recovered: removed the dead mount at " + mnt + " left by a daemon that died (stat " + mnt + ": ",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("mount after kill -9 does not say %q:\n%s", want, r.stderr)
		}
	}
	if !strings.Contains(r.stderr, syscall.ENOTCONN.Error()) && !strings.Contains(r.stderr, syscall.ECONNABORTED.Error()) {
		t.Errorf("mount after kill -9 does not say why the mount was dead:\n%s", r.stderr)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "kept.bin")); err != nil || string(got) != string(data) {
		t.Fatalf("fsynced file after recovery: %v", err)
	}
	if n := strings.Count(mountinfoLines(t, mnt), "\n"); n != 1 {
		t.Errorf("%d mounts at %s, want 1 (the dead one removed)", n, mnt)
	}
}

func mountinfoLines(t *testing.T, mnt string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && unescapeMountinfo(f[4]) == mnt {
			out.WriteString(l + "\n")
		}
	}
	return out.String()
}

// scrape fetches /metrics and parses it with Prometheus' text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// metric sums a family's counters (or histogram counts) whose labels
// include labels; 0 when the family is absent.
func metric(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	sum := 0.0
next:
	for _, m := range fams[name].GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// /metrics parses, and its counters move when a file is written and read.
func TestMetricsMoveOnWriteAndRead(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	mnt := newMountpoint(t)
	pid := startDaemon(t, repo, mnt, "--metrics", "127.0.0.1:0")
	addr := repoStatus(t, repo).MetricsAddr
	before := scrape(t, addr)
	data := randomBytes(3, 2<<20)
	writeFile(t, filepath.Join(mnt, "m.bin"), data)
	writeFile(t, filepath.Join(mnt, "same.bin"), data) // stored once
	f, _ := os.Open(filepath.Join(mnt, "same.bin"))
	f.Sync() // publishes: the dedup shows in the store counters
	f.Close()
	after := scrape(t, addr)
	moved := []struct {
		name   string
		labels []string
		least  float64
	}{
		{"ipfrs_fuse_written_bytes_total", nil, 2 * float64(len(data))},
		{"ipfrs_fuse_op_duration_seconds", []string{"op", "write"}, 2},
		{"ipfrs_fuse_op_duration_seconds", []string{"op", "create"}, 2},
		{"ipfrs_fuse_op_duration_seconds", []string{"op", "lookup"}, 1},
		{"ipfrs_store_block_puts_total", nil, 1},
		{"ipfrs_store_block_put_bytes_total", nil, float64(len(data))},
		{"ipfrs_store_dedup_bytes_total", nil, float64(len(data))},
	}
	for _, m := range moved {
		if d := metric(after, m.name, m.labels...) - metric(before, m.name, m.labels...); d < m.least {
			t.Errorf("%s%v moved by %v on writes, want >= %v", m.name, m.labels, d, m.least)
		}
	}
	// A fresh mount has no page cache for the file: reads reach it.
	must(t, repo, "unmount", mnt)
	waitExit(t, pid)
	pid = startDaemon(t, repo, mnt, "--metrics", "127.0.0.1:0")
	addr = repoStatus(t, repo).MetricsAddr
	before = scrape(t, addr)
	got, err := os.ReadFile(filepath.Join(mnt, "m.bin"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("read back: %v", err)
	}
	after = scrape(t, addr)
	for _, m := range []struct {
		name   string
		labels []string
		least  float64
	}{
		{"ipfrs_fuse_read_bytes_total", nil, float64(len(data))},
		{"ipfrs_fuse_op_duration_seconds", []string{"op", "read"}, 1},
		{"ipfrs_fuse_op_duration_seconds", []string{"op", "open"}, 1},
		{"ipfrs_store_block_gets_total", nil, 1},
		{"ipfrs_store_block_get_bytes_total", nil, float64(len(data))},
	} {
		if d := metric(after, m.name, m.labels...) - metric(before, m.name, m.labels...); d < m.least {
			t.Errorf("%s%v moved by %v on reads, want >= %v", m.name, m.labels, d, m.least)
		}
	}
	if n := metric(after, "ipfrs_fuse_open_files"); n != 0 {
		t.Errorf("open files after the read closed: %v", n)
	}
}

func health(t *testing.T, addr string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("/health body %q: %v", b, err)
	}
	return resp.StatusCode, body
}

// /health is 200 while the mount answers, 503 naming the FUSE part once
// the mount point no longer leads to it: here after `umount -l` of the
// mount point while a file on it is still open, so the daemon still runs
// (serving that file) but the mount is gone for everyone else.
func TestHealthTurns503WhenFUSEGone(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	mnt := newMountpoint(t)
	pid := startDaemon(t, repo, mnt, "--metrics", "127.0.0.1:0")
	addr := repoStatus(t, repo).MetricsAddr
	if code, body := health(t, addr); code != 200 || body["status"] != "ok" {
		t.Fatalf("/health of a live mount: %d %v", code, body)
	}
	writeFile(t, filepath.Join(mnt, "open.txt"), []byte("still open\n"))
	f, err := os.Open(filepath.Join(mnt, "open.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount -l: %v %s", err, out)
	}
	code, body := health(t, addr)
	checks, _ := body["checks"].(map[string]any)
	if code != 503 || body["status"] != "fail" || checks["store"] != "ok" || checks["fuse"] == "ok" || checks["fuse"] == nil {
		t.Fatalf("/health after umount -l: %d %v", code, body)
	}
	// The open file is still served; closing it ends the daemon.
	if b, err := io.ReadAll(f); err != nil || string(b) != "still open\n" {
		t.Fatalf("read of the open file: %q %v", b, err)
	}
	f.Close()
	waitExit(t, pid)
}
