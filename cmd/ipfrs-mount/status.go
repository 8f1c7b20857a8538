package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/repository"
	"github.com/ipfrs/ipfrs-mount/s3tier"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

func statusCommand() *command {
	var asJSON bool
	return &command{
		name: "status", args: "[--json]", help: "mounted or not, where, since when; repo size, dedup, open files, last commit",
		flags: func(fs *pflag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") },
		run:   func(ctx context.Context, a *app, fs *pflag.FlagSet) error { return a.status(ctx, asJSON) },
	}
}

// statusOut is the status output; its JSON shape is stable (README).
type statusOut struct {
	Repo          string        `json:"repo"`
	Mounted       bool          `json:"mounted"`
	Mountpoint    string        `json:"mountpoint"`     // "" when not mounted
	PID           int           `json:"pid"`            // 0 when not mounted
	Started       *time.Time    `json:"started"`        // null when not mounted
	UptimeSeconds float64       `json:"uptime_seconds"` // 0 when not mounted
	LogFile       string        `json:"log_file"`       // "" when the daemon logs to its stderr
	MetricsAddr   string        `json:"metrics_addr"`   // "" without --metrics
	DiskBytes     int64         `json:"disk_bytes"`     // the store's files on disk
	Blocks        int64         `json:"blocks"`
	StoredBytes   int64         `json:"stored_bytes"` // sum of stored block sizes
	TreeFiles     int64         `json:"tree_files"`   // regular files in the working tree
	TreeBytes     uint64        `json:"tree_bytes"`   // their sizes
	DedupRatio    float64       `json:"dedup_ratio"`  // tree_bytes / stored_bytes
	OpenFiles     int64         `json:"open_files"`   // handles open on the mount
	LastCommit    *commitInfo   `json:"last_commit"`  // null before the first commit
	LastGC        *gcInfo       `json:"last_gc"`      // null: never ran, or no gc in this build
	Cache         *cacheInfo    `json:"cache"`        // null: the mount has no read cache
	Prefetch      *prefetchInfo `json:"prefetch"`     // null: the mount has no prefetcher
	Hot           *hotInfo      `json:"hot"`          // null: the mount has no hot tier
	S3            *s3tier.Stats `json:"s3"`           // null: no S3 tier and nothing queued for one
	StalePID      int           `json:"stale_pid,omitempty"`
}

type commitInfo struct {
	CID     string    `json:"cid"`
	Branch  string    `json:"branch"`
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
}

type gcInfo struct {
	Time       time.Time `json:"time"`
	Runs       int64     `json:"runs"`
	FreedBytes int64     `json:"freed_bytes"`
}

type cacheInfo struct {
	Hits    int64   `json:"hits"`
	Misses  int64   `json:"misses"`
	HitRate float64 `json:"hit_rate"` // hits / (hits + misses)
}

type hotInfo struct {
	Mode        string `json:"mode"` // "passthrough" or "mmap"
	Files       int    `json:"files"`
	Bytes       int64  `json:"bytes"`
	BudgetBytes int64  `json:"budget_bytes"`
}

type prefetchInfo struct {
	FetchedBytes    int64   `json:"fetched_bytes"`
	UsedBytes       int64   `json:"used_bytes"`
	Useful          float64 `json:"useful"`            // used / fetched
	BudgetBytes     int64   `json:"budget_bytes"`      // read-ahead allowed, all readers together
	BudgetPeakBytes int64   `json:"budget_peak_bytes"` // most of it ever in use
}

// status runs in the daemon when the repo is mounted (the control socket
// forwards it), else against the repo directly.
func (a *app) status(ctx context.Context, asJSON bool) error {
	dir, err := a.repoDir()
	if err != nil {
		return err
	}
	out := statusOut{Repo: dir}
	var s *store.Badger
	var h *versions.History
	if d := a.daemon; d != nil {
		now := time.Now()
		out.Repo = d.repo
		out.Mounted, out.Mountpoint, out.PID = true, d.mountpoint, d.pid
		out.Started, out.UptimeSeconds = &d.started, now.Sub(d.started).Seconds()
		out.LogFile, out.MetricsAddr = d.logFile, d.mount.MetricsAddr()
		out.OpenFiles = d.mount.Metrics().OpenFileCount()
		u := d.tree.Usage()
		out.TreeFiles, out.TreeBytes = u.Files, u.Bytes
		src := d.mount.Metrics().Sources()
		if src.Cache != nil {
			c := src.Cache.CacheCounters()
			out.Cache = &cacheInfo{Hits: c.Hits, Misses: c.Misses, HitRate: ratio(c.Hits, c.Hits+c.Misses)}
			out.Prefetch = &prefetchInfo{FetchedBytes: c.PrefetchedBytes, UsedBytes: c.PrefetchUsedBytes,
				Useful: ratio(c.PrefetchUsedBytes, c.PrefetchedBytes)}
			if pf := d.mount.Prefetcher(); pf != nil {
				st := pf.Stats()
				out.Prefetch.BudgetBytes, out.Prefetch.BudgetPeakBytes = st.Budget, st.BudgetPeak
			}
		}
		if hot := d.mount.Hot(); hot != nil {
			st := hot.Stats()
			out.Hot = &hotInfo{Mode: hot.Mode(), Files: st.Files, Bytes: st.Bytes, BudgetBytes: st.BudgetBytes}
		}
		if d.s3 != nil {
			st := d.s3.Stats()
			out.S3 = &st
		}
		if src.GC != nil {
			if g := src.GC.GCCounters(); g.Runs > 0 {
				out.LastGC = &gcInfo{Time: g.LastRun, Runs: g.Runs, FreedBytes: g.FreedBytes}
			}
		}
		s, h = d.store, a.shared.History()
	} else {
		if pid, err := readPidFile(dir); err == nil {
			out.StalePID = pid // no daemon answered for it
		}
		r, err := a.openRepoReadOnly()
		if err != nil {
			return err
		}
		defer r.close()
		s, h = r.store, r.History()
		u, err := worktree.StoredUsage(ctx, s)
		if err != nil {
			return err
		}
		out.TreeFiles, out.TreeBytes = u.Files, u.Bytes
		if n, err := s3tier.Pending(ctx, s); err == nil && n > 0 {
			out.S3 = &s3tier.Stats{Queue: int64(n)}
		}
	}
	st, err := s.Stats(ctx)
	if err != nil {
		return err
	}
	out.DiskBytes, out.Blocks, out.StoredBytes = st.DiskBytes, st.Blocks, st.BlockBytes
	out.DedupRatio = ratio(int64(out.TreeBytes), out.StoredBytes)
	branch, head, err := h.Head(ctx)
	if err != nil {
		return err
	}
	if head != cid.Undef {
		c, err := h.Get(ctx, head)
		if err != nil {
			return err
		}
		msg, _, _ := strings.Cut(c.Message, "\n")
		out.LastCommit = &commitInfo{CID: c.CID.String(), Branch: branch, Time: c.Time.UTC(), Message: msg}
	}
	if asJSON {
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintf(a.stdout, "%s\n", b)
		return nil
	}
	printStatus(a, out)
	return nil
}

func ratio(a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func printStatus(a *app, out statusOut) {
	w := a.stdout
	if out.Mounted {
		fmt.Fprintf(w, "mounted:      %s at %s (pid %d, up %s)\n", out.Repo, out.Mountpoint, out.PID,
			time.Duration(out.UptimeSeconds*float64(time.Second)).Round(time.Second))
		if out.LogFile != "" {
			fmt.Fprintf(w, "log:          %s\n", out.LogFile)
		}
		if out.MetricsAddr != "" {
			fmt.Fprintf(w, "metrics:      http://%s/metrics\n", out.MetricsAddr)
		}
		fmt.Fprintf(w, "open files:   %d\n", out.OpenFiles)
	} else {
		fmt.Fprintf(w, "mounted:      no (%s)\n", out.Repo)
		if out.StalePID != 0 {
			fmt.Fprintf(w, "stale pid:    %d (a daemon did not stop cleanly; the next mount cleans up)\n", out.StalePID)
		}
	}
	fmt.Fprintf(w, "repo size:    %s on disk, %d blocks, %s stored\n", humanize.IBytes(uint64(out.DiskBytes)), out.Blocks, humanize.IBytes(uint64(out.StoredBytes)))
	fmt.Fprintf(w, "working tree: %d files, %s\n", out.TreeFiles, humanize.IBytes(out.TreeBytes))
	fmt.Fprintf(w, "dedup ratio:  %.3f (working tree bytes / stored bytes)\n", out.DedupRatio)
	if c := out.LastCommit; c != nil {
		fmt.Fprintf(w, "last commit:  %s %s %s (%s)\n", c.CID, c.Time.Format(time.RFC3339), c.Message, c.Branch)
	} else {
		fmt.Fprintf(w, "last commit:  none\n")
	}
	if g := out.LastGC; g != nil {
		fmt.Fprintf(w, "last gc:      %s (%d runs, %s freed)\n", g.Time.Format(time.RFC3339), g.Runs, humanize.IBytes(uint64(g.FreedBytes)))
	} else {
		fmt.Fprintf(w, "last gc:      none\n")
	}
	if c := out.Cache; c != nil {
		fmt.Fprintf(w, "cache:        %.1f%% hits (%d of %d)\n", 100*c.HitRate, c.Hits, c.Hits+c.Misses)
	}
	if p := out.Prefetch; p != nil {
		fmt.Fprintf(w, "prefetch:     %.1f%% of %s fetched ahead was read\n", 100*p.Useful, humanize.IBytes(uint64(p.FetchedBytes)))
	}
	if s := out.S3; s != nil && s.Bucket == "" {
		fmt.Fprintf(w, "s3 tier:      %d refs queued for upload (pushed by the next mount --s3)\n", s.Queue)
	} else if s != nil {
		fmt.Fprintf(w, "s3 tier:      %s: %d queued, %s pushed in %d packs; %d blocks read (%s), %d cache hits\n", s.Bucket, s.Queue,
			humanize.IBytes(uint64(s.PushedBytes)), s.Packs, s.RemoteReads, humanize.IBytes(uint64(s.RemoteBytes)), s.CacheHits)
		if s.LastError != "" {
			fmt.Fprintf(w, "s3 error:     %s\n", s.LastError)
		}
	}
	if h := out.Hot; h != nil {
		fmt.Fprintf(w, "hot tier:     %d files, %s of %s, served by %s\n", h.Files, humanize.IBytes(uint64(h.Bytes)), humanize.IBytes(uint64(h.BudgetBytes)), h.Mode)
	}
}

func unmountCommand(name string) *command {
	var timeout time.Duration
	return &command{
		name: name, args: "MOUNTPOINT [--timeout D]", local: true,
		help: "flush and unmount a mount, and wait for its daemon to exit",
		flags: func(fs *pflag.FlagSet) {
			fs.DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the daemon to flush and exit")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() != 1 {
				return errors.New("want exactly one MOUNTPOINT")
			}
			return a.unmount(ctx, fs.Arg(0), timeout)
		},
	}
}

// unmount asks the daemon serving mountpoint to stop, then waits until it
// has flushed and exited. In the daemon (over the control socket) it only
// starts the stop.
func (a *app) unmount(ctx context.Context, mountpoint string, timeout time.Duration) error {
	mnt := filepath.Clean(a.abs(mountpoint))
	if p, err := filepath.EvalSymlinks(mnt); err == nil {
		mnt = p // mountinfo lists resolved paths
	}
	if d := a.daemon; d != nil {
		if mnt != d.mountpoint {
			return fmt.Errorf("this repo is mounted at %s, not %s", d.mountpoint, mnt)
		}
		d.stop()
		return nil
	}
	m, mounted, err := mountAt(mnt)
	if err != nil {
		return err
	}
	if !mounted || m.fstype != fsType {
		return fmt.Errorf("%s is not an ipfrs mount", mnt)
	}
	dir := m.source // the repo, unless its path could not be a mount source
	if _, err := os.Stat(dir); err != nil || !strings.HasPrefix(dir, "/") {
		if dir, err = a.repoDir(); err != nil {
			return err
		}
	}
	pid, _ := readPidFile(dir)
	done, err := forward(ctx, dir, []string{"unmount", mnt}, a.env)
	if !done {
		// No daemon answers: a dead mount.
		if _, err := probe(mnt, 2*time.Second); err == nil {
			return fmt.Errorf("no daemon answers on %s/%s, but %s still answers; is the repo right (--repo)?", dir, repository.SocketName, mnt)
		}
		if err := detach(mnt); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "ipfrs-mount: no daemon served %s; removed the dead mount\n", mnt)
		return nil
	}
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		_, still, err := mountAt(mnt)
		if err != nil {
			return err
		}
		if !still && (pid == 0 || !alive(pid)) {
			fmt.Fprintf(a.stderr, "ipfrs-mount: unmounted %s\n", mnt)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the daemon (pid %d) has not finished after %v; files still open on the mount keep it serving (the mount is detached)", pid, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
