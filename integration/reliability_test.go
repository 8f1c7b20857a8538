package integration

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The reliability suite (issue 8): crashes, corruption, hostile input, a
// full disk, load, security and resource bounds, run the same way every
// time with counts at the end. IPFRS_RELIABILITY=full runs the long mode:
//
//	IPFRS_RELIABILITY=full go test ./integration -run TestReliability -timeout 60m -v
//
// (scripts/reliability.sh full). Without it, the fast mode runs, as in CI.

// reliabilityConfig is what differs between the fast and the full mode.
type reliabilityConfig struct {
	name        string
	crashRounds int           // random-operation crash rounds
	loadFor     time.Duration // fio with 8 writers and 8 readers
	stressFor   time.Duration // each of stress-ng and dbench
	openCycles  int           // open/close cycles before fds and goroutines are compared
}

func reliabilityMode(t *testing.T) reliabilityConfig {
	t.Helper()
	cfg := reliabilityConfig{name: "fast", crashRounds: 10, loadFor: 10 * time.Second, stressFor: 10 * time.Second, openCycles: 10000}
	switch m := os.Getenv("IPFRS_RELIABILITY"); m {
	case "", "fast":
	case "full":
		cfg = reliabilityConfig{name: "full", crashRounds: 100, loadFor: 60 * time.Second, stressFor: 10 * time.Second, openCycles: 10000}
	default:
		t.Fatalf("IPFRS_RELIABILITY=%q: want fast or full", m)
	}
	if s := os.Getenv("IPFRS_CRASH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("IPFRS_CRASH_ROUNDS=%q: want a positive number", s)
		}
		cfg.crashRounds = n
	}
	return cfg
}

// tally counts what the suite did. Runs are checks that ran (a crash
// round, a hostile input, a load program); ops are file-system or CLI
// operations issued; faults are injected failures (SIGKILLs, altered
// bytes, hostile inputs, a full disk).
type tally struct {
	runs, ops, faults, failures atomic.Int64

	mu      sync.Mutex
	peakRSS int64 // bytes of RssAnon, the largest seen in any daemon
	peakOf  string
}

func (c *tally) run()            { c.runs.Add(1) }
func (c *tally) op(n int)        { c.ops.Add(int64(n)) }
func (c *tally) fault(n int)     { c.faults.Add(int64(n)) }
func (c *tally) runWith(ops int) { c.runs.Add(1); c.ops.Add(int64(ops)) }

// watchRSS samples the RssAnon of pid (a daemon) until it exits, keeping
// the peak. The daemon maps its value log, so its RSS counts file pages
// too; RssAnon is what it holds outside the page cache.
func (c *tally) watchRSS(what string, pid int) {
	go func() {
		for {
			kb, err := rssAnonKB(pid)
			if err != nil {
				return
			}
			c.mu.Lock()
			if kb<<10 > c.peakRSS {
				c.peakRSS, c.peakOf = kb<<10, what
			}
			c.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

// rssAnonKB reads RssAnon from /proc/PID/status.
func rssAnonKB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "RssAnon:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no RssAnon in /proc/%d/status (exited?)", pid)
}

// maxDaemonRSS is the bound of issue 8 on what a daemon holds outside the
// page cache.
const maxDaemonRSS = 300 << 20

// TestReliability runs the suite's parts in order and prints the counts.
func TestReliability(t *testing.T) {
	requireFUSE(t)
	cfg := reliabilityMode(t)
	c := &tally{}
	start := time.Now()
	parts := []struct {
		name string
		run  func(t *testing.T, cfg reliabilityConfig, c *tally)
	}{
		{"crash/random-ops", crashRandomOps},
		{"crash/checkpoints", crashCheckpoints},
		{"crash/commit", crashDuringCommit},
		{"crash/gc", crashDuringGC},
		{"crash/import", crashDuringImport},
		{"corruption", corruption},
		{"hostile", hostileInput},
		{"diskfull", diskFull},
		{"load", load},
		{"security", security},
	}
	for _, p := range parts {
		if !t.Run(p.name, func(t *testing.T) { p.run(t, cfg, c) }) {
			c.failures.Add(1)
		}
	}
	c.mu.Lock()
	peak, peakOf := c.peakRSS, c.peakOf
	c.mu.Unlock()
	if peak > maxDaemonRSS {
		c.failures.Add(1)
		t.Errorf("daemon RssAnon peaked at %.1f MiB (%s), over %d MiB", float64(peak)/(1<<20), peakOf, maxDaemonRSS>>20)
	}
	report := fmt.Sprintf("reliability %s: %d runs, %d ops, %d faults injected, %d failures; daemon RssAnon peak %.1f MiB (%s); %s",
		cfg.name, c.runs.Load(), c.ops.Load(), c.faults.Load(), c.failures.Load(),
		float64(peak)/(1<<20), peakOf, time.Since(start).Round(time.Second))
	t.Log(report)
	fmt.Println(report) // also without -v: the line the docs quote
	if path := os.Getenv("IPFRS_RELIABILITY_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report+"\n"), 0o644); err != nil {
			t.Error(err)
		}
	}
}
