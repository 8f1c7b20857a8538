package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// load runs fio (8 writers verifying what they wrote, 8 readers),
// stress-ng's file-system stressors and dbench on a daemon mount, then
// checks that 10,000 open/close cycles leave no file descriptors or
// goroutines behind.
func load(t *testing.T, cfg reliabilityConfig, c *tally) {
	fio := requireProgram(t, "fio")
	stressNG := requireProgram(t, "stress-ng")
	dbench := requireProgram(t, "dbench")
	repo := filepath.Join(t.TempDir(), "repo")
	mnt := newMountpoint(t)
	pid := startDaemon(t, repo, mnt, "--metrics", "127.0.0.1:0")
	c.watchRSS(t.Name(), pid)
	addr := repoStatus(t, repo).MetricsAddr

	// Where the memory goes: the daemon's RssAnon after each program.
	after := func(what string) {
		if kb, err := rssAnonKB(pid); err == nil {
			t.Logf("daemon RssAnon after %s: %.1f MiB", what, float64(kb)/1024)
		}
	}
	defer after("the load")
	t.Run("fio", func(t *testing.T) {
		defer after("fio")
		dir := filepath.Join(mnt, "fio")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		secs := fmt.Sprint(int(cfg.loadFor.Seconds()))
		common := []string{"--directory=" + dir, "--size=16m", "--bs=64k", "--ioengine=psync",
			"--time_based", "--runtime=" + secs, "--group_reporting"}
		args := append([]string{"--name=writers", "--rw=randwrite", "--numjobs=8",
			"--verify=crc32c", "--verify_backlog=16", "--verify_fatal=1", "--do_verify=1"}, common...)
		args = append(args, append([]string{"--name=readers", "--rw=randread", "--numjobs=8"}, common...)...)
		out := runProgram(t, mnt, nil, fio, append(args, "--output-format=terse", "--terse-version=3")...)
		if strings.Contains(out, "verify:") || strings.Contains(out, "bad magic") {
			t.Fatalf("fio reported verification errors:\n%s", out)
		}
		ops := 0
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			// terse v3: field 5 is the KiB read, field 46 the KiB written
			f := strings.Split(line, ";")
			if len(f) > 50 {
				var r, w int
				fmt.Sscan(f[5], &r)
				fmt.Sscan(f[46], &w)
				ops += (r + w) / 64 // kB moved / 64 KiB per I/O
			}
		}
		c.runWith(ops)
		t.Logf("fio: 8 writers with crc32c verify and 8 readers for %s: about %d I/Os", secs+"s", ops)
	})

	t.Run("stress-ng", func(t *testing.T) {
		defer after("stress-ng")
		dir := filepath.Join(mnt, "stress")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		stressors := []string{"dir", "dentry", "rename", "link", "symlink", "mmap", "fallocate", "xattr", "lockf", "flock", "hdd", "seek"}
		args := []string{"--temp-path", dir, "--timeout", fmt.Sprint(int(cfg.stressFor.Seconds())), "--metrics-brief", "--verify"}
		for _, s := range stressors {
			args = append(args, "--"+s, "1")
		}
		if s := stressNGOps(t, runProgram(t, mnt, nil, stressNG, args...)); s > 0 {
			c.runWith(s)
		}
	})

	t.Run("dbench", func(t *testing.T) {
		defer after("dbench")
		dir := filepath.Join(mnt, "dbench")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		out := runProgram(t, mnt, nil, dbench, "-D", dir, "-t", fmt.Sprint(int(cfg.stressFor.Seconds())), "4")
		if !strings.Contains(out, "Throughput") {
			t.Fatalf("dbench did not finish:\n%s", out)
		}
		ops := 0
		for _, line := range strings.Split(out, "\n") {
			var name string
			var n int
			if _, err := fmt.Sscan(line, &name, &n); err == nil {
				ops += n
			}
		}
		c.runWith(ops)
	})

	t.Run("open-close cycles", func(t *testing.T) {
		p := filepath.Join(mnt, "cycle.txt")
		writeFile(t, p, []byte("open me\n"))
		cycle := func(n int) {
			for range n {
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
		}
		cycle(500) // warm caches and pools
		time.Sleep(time.Second)
		fds0, g0 := countFDs(t, pid), metric(scrape(t, addr), "go_goroutines")
		cycle(cfg.openCycles)
		time.Sleep(time.Second) // the kernel's RELEASEs are asynchronous
		fds1, g1 := countFDs(t, pid), metric(scrape(t, addr), "go_goroutines")
		c.runWith(cfg.openCycles)
		t.Logf("%d open/close cycles: daemon fds %d -> %d, goroutines %v -> %v", cfg.openCycles, fds0, fds1, g0, g1)
		// A leak per cycle would show thousands; allow what background
		// work (a metrics scrape, a flush) may hold for a moment.
		if fds1 > fds0+4 {
			t.Errorf("daemon fds grew from %d to %d", fds0, fds1)
		}
		if g1 > g0+8 {
			t.Errorf("daemon goroutines grew from %v to %v", g0, g1)
		}
	})
	must(t, repo, "unmount", mnt)
	waitExit(t, pid)
	must(t, repo, "verify")
}

func countFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// stressNGOps sums the bogo ops of stress-ng's --metrics-brief table.
func stressNGOps(t *testing.T, out string) int {
	t.Helper()
	total := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// "stress-ng: info: [pid] dir 1234 10.00 ..."
		for i := 0; i+1 < len(f); i++ {
			if strings.HasPrefix(f[i], "[") && strings.HasSuffix(f[i], "]") && i+2 < len(f) {
				var n int
				if _, err := fmt.Sscan(f[i+2], &n); err == nil {
					total += n
				}
				break
			}
		}
	}
	t.Logf("stress-ng:\n%s", out)
	return total
}

// asNobody runs a command as uid and gid 65534 with no groups.
func asNobody(args ...string) ([]byte, error) {
	return exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)...).CombinedOutput()
}
