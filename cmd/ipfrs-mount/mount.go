package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/ipfrs/ipfrs-mount/fusefs"
	"github.com/ipfrs/ipfrs-mount/gc"
	"github.com/ipfrs/ipfrs-mount/metrics"
	"github.com/ipfrs/ipfrs-mount/mmapio"
	"github.com/ipfrs/ipfrs-mount/prefetch"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

type mountFlags struct {
	allowOther, debug bool
	readAheadKB       int
	autocommit        time.Duration
	compress          bool
	daemon            bool
	logLevel          string
	metricsAddr       string
	gcInterval        time.Duration
	gcMinAge          time.Duration
	gcTargetSize      string
	prefetch          bool
	prefetchBudget    string
	hashReads         bool
	hotCache          string
	passthrough       bool
	gateway           string
	remote            remoteFlags
}

func mountCommand() *command {
	f := &mountFlags{}
	return &command{
		name: "mount", args: "MOUNTPOINT [--daemon] [--metrics ADDR] [--allow-other]", local: true,
		help: "mount the repo's working tree (foreground, or --daemon; unmount with 'ipfrs-mount unmount', SIGTERM or fusermount3 -u)",
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVar(&f.allowOther, "allow-other", false, "let other users access the mount")
			fs.BoolVar(&f.debug, "debug", false, "log every FUSE request")
			fs.IntVar(&f.readAheadKB, "readahead-kb", 16384, "kernel readahead for the mount, KiB")
			fs.DurationVar(&f.autocommit, "autocommit", 0, "commit every DURATION when the tree changed (0: never)")
			fs.BoolVar(&f.compress, "compress", true, "store tensors of safetensors files compressed: byte-grouped and Huffman-coded, and as deltas against the same tensor in the last file that had it (--compress=false: stored plainly)")
			fs.BoolVarP(&f.daemon, "daemon", "d", false, "run in the background once the mount answers; pid file and log in the repo")
			fs.StringVar(&f.logLevel, "log-level", "", "debug | info | warn | error (default: info in the daemon's log file, warn on stderr)")
			fs.StringVar(&f.metricsAddr, "metrics", "", "serve /metrics (Prometheus) and /health on ADDR, e.g. 127.0.0.1:9464")
			fs.StringVar(&f.hotCache, "hot-cache", "8GiB", "size of the hot tier: flat copies of files read whole or warmed, in <repo>/hot (0: none)")
			fs.BoolVar(&f.passthrough, "passthrough", true, "serve hot files by FUSE passthrough when the kernel allows it (else through mmap)")
			fs.BoolVar(&f.hashReads, "hash-reads", false, "hash every block against its CID on its first read, instead of trusting the store's CRC32C of it")
			fs.BoolVar(&f.prefetch, "prefetch", true, "read ahead of sequential readers and whole tensors, in parallel")
			fs.StringVar(&f.prefetchBudget, "prefetch-budget", "256MiB", "bytes read ahead of all readers together")
			fs.DurationVar(&f.gcInterval, "gc-interval", time.Minute, "collect garbage in the background every DURATION, at low CPU and I/O priority, when blocks were written since the last time (0: only when gc is run)")
			fs.DurationVar(&f.gcMinAge, "gc-min-age", time.Minute, "background GC keeps unreachable blocks younger than DURATION")
			fs.StringVar(&f.gcTargetSize, "gc-target-size", "", "with --gc-interval: collect only while the stored blocks exceed SIZE (e.g. 100GiB)")
			fs.StringVar(&f.gateway, "gateway", "", "also serve the repo as an IPFS trustless gateway on ADDR (like 'serve --gateway')")
			f.remote.add(fs)
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() != 1 {
				return errors.New("want exactly one MOUNTPOINT")
			}
			if _, err := humanize.ParseBytes(f.hotCache); err != nil {
				return fmt.Errorf("bad --hot-cache %q", f.hotCache)
			}
			if _, err := humanize.ParseBytes(f.prefetchBudget); err != nil {
				return fmt.Errorf("bad --prefetch-budget %q", f.prefetchBudget)
			}
			if f.gcTargetSize != "" {
				if f.gcInterval <= 0 {
					return errors.New("--gc-target-size needs --gc-interval")
				}
				if _, err := humanize.ParseBytes(f.gcTargetSize); err != nil {
					return fmt.Errorf("bad --gc-target-size %q", f.gcTargetSize)
				}
			}
			if f.daemon && !daemonChild() {
				dir, err := a.repoDir()
				if err != nil {
					return err
				}
				if dir, err = filepath.Abs(dir); err != nil {
					return err
				}
				return a.detachDaemon(ctx, dir, fs.Arg(0))
			}
			return a.mount(ctx, fs.Arg(0), f)
		},
	}
}

// daemonMemoryLimit is the daemon's soft Go memory limit unless GOMEMLIMIT
// sets one. Without it, write bursts (fio, 16 jobs) let the heap's garbage
// take RssAnon to 500-700 MiB between collections; with it the same load
// peaks near 130 MiB at the same throughput (issue 8, measured).
const daemonMemoryLimit = 192 << 20

func (a *app) mount(ctx context.Context, mountpoint string, f *mountFlags) error {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(daemonMemoryLimit)
	}
	mnt, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	if p, err := filepath.EvalSymlinks(mnt); err == nil {
		mnt = p // mountinfo lists resolved paths
	}
	dir, err := a.repoDir()
	if err != nil {
		return err
	}
	if a.repoPath, err = filepath.Abs(dir); err != nil {
		return err
	}
	dir = a.repoPath
	if daemonChild() {
		os.Chdir("/") // keep no directory busy
	}
	log, logPath, closeLog, err := a.mountLogger(dir, f.logLevel)
	if err != nil {
		return err
	}
	defer closeLog()
	a.log = log
	if err := alreadyMounted(ctx, dir); err != nil {
		return err
	}
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	defer r.close()
	recovered, err := recoverStale(dir, mnt)
	for _, msg := range recovered {
		fmt.Fprintf(a.stderr, "ipfrs-mount: recovered: %s\n", msg)
		a.log.Warn("recovered", "what", msg)
	}
	if err != nil {
		return err
	}
	if fi, err := os.Stat(mnt); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", mnt)
	}
	a.log = a.log.With("mount", mnt)
	tree, err := worktree.Open(ctx, r.store, worktree.Options{
		Layout:     unixfs.DefaultLayout(),
		StagingDir: filepath.Join(r.path, "staging"),
		Logger:     a.log,
		Compress:   f.compress,
	})
	if err != nil {
		return err
	}
	blocks, closeRemote, err := f.remote.open(r.store, a.log)
	if err != nil {
		tree.Close(context.Background())
		return err
	}
	defer closeRemote()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var pf *prefetch.Prefetcher
	src := metrics.Sources{Store: r.store.Counters}
	if f.prefetch {
		budget, _ := humanize.ParseBytes(f.prefetchBudget)
		pf = prefetch.New(prefetch.Options{Budget: int64(budget)})
		defer pf.Close()
		src.Cache = prefetchCounters{pf}
	}
	gcs := &gcRecord{}
	src.GC = gcs
	d := &daemonState{gateways: &gatewaySet{log: a.log}, repo: dir, mountpoint: mnt, pid: os.Getpid(), store: r.store,
		logFile: logPath, stop: stop, metrics: metrics.New(src), gcs: gcs}
	d.started = d.metrics.Started()
	r.store.HashReads(f.hashReads)
	if hotBytes, _ := humanize.ParseBytes(f.hotCache); hotBytes > 0 {
		tier, err := mmapio.Open(filepath.Join(r.path, "hot"), int64(hotBytes), a.log)
		if err != nil {
			tree.Close(context.Background())
			return err
		}
		d.hot = fusefs.NewHot(tier, tree, r.store, f.passthrough, a.log)
		defer d.hot.Close()
	}
	d.prefetch = pf
	server, err := fusefs.Mount(mnt, tree, fusefs.MountOptions{
		History: versions.New(r.store), Blocks: blocks, Store: r.store, Chunker: chunkerParams(),
		AllowOther: f.allowOther, Debug: f.debug, ReadAheadKB: f.readAheadKB, Logger: a.log,
		FsName: fsName(dir), Observer: d.metrics, Prefetch: pf, Hot: d.hot,
	})
	if err != nil {
		tree.Close(context.Background())
		return err
	}
	fail := func(err error) error {
		server.Unmount()
		tree.Close(context.Background())
		return err
	}
	if d.dev, err = checkMount(mnt); err != nil {
		return fail(err)
	}
	stopControl, err := serveControl(ctx, &repo{path: r.path, store: r.store, shared: true}, tree, d, a.log)
	if err != nil {
		return fail(err)
	}
	defer stopControl()
	defer d.gateways.closeAll()
	if f.gateway != "" {
		url, err := d.gateways.start(f.gateway, r.store)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(a.stderr, "ipfrs-mount: serving the trustless gateway at %s\n", url)
	}
	if f.metricsAddr != "" {
		stopMetrics, err := d.serveMetrics(f.metricsAddr, a.log)
		if err != nil {
			return fail(err)
		}
		defer stopMetrics()
	}
	if err := writePidFile(dir); err != nil {
		return fail(fmt.Errorf("pid file: %w", err))
	}
	defer os.Remove(filepath.Join(dir, pidFileName))
	fmt.Fprintf(a.stderr, "ipfrs-mount: mounted %s at %s\n", r.path, mnt)
	a.log.Info("mounted", "repo", dir, "pid", d.pid, "metrics", d.metricsAddr)
	a.daemonReady(logPath)
	if f.autocommit > 0 {
		go a.autocommit(ctx, r, tree, f.autocommit)
	}
	if f.gcInterval > 0 {
		target, _ := humanize.ParseBytes(f.gcTargetSize)
		go a.autoGC(ctx, r, tree, gcs, f.gcInterval, f.gcMinAge, int64(target))
	}
	go func() {
		<-ctx.Done()
		// A busy mount refuses to unmount; retry, then detach lazily so the
		// daemon still serves open files until they are closed.
		for i := 0; ; i++ {
			err := server.Unmount()
			if err == nil {
				return
			}
			if i == 20 {
				a.log.Warn("mount busy; detaching it", "err", err)
				_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
	server.Wait()
	if err := tree.Close(context.Background()); err != nil {
		return fmt.Errorf("flushing the working tree: %w", err)
	}
	fmt.Fprintf(a.stderr, "ipfrs-mount: unmounted %s\n", mnt)
	a.log.Info("unmounted")
	return nil
}

// autoGC collects garbage every interval (only above target when it is
// positive) when blocks were written since the last run or it kept some
// for being young, keeping blocks younger than minAge, on a thread of the lowest CPU and I/O priority.
func (a *app) autoGC(ctx context.Context, r *repo, tree *worktree.Tree, gcs *gcRecord, every, minAge time.Duration, target int64) {
	lowPriority(a.log)
	tick := time.NewTicker(every)
	defer tick.Stop()
	d := &app{env: env{shared: r, tree: tree}, log: a.log}
	lastPuts, waiting := int64(-1), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			puts := r.store.Counters().Puts
			if puts == lastPuts && !waiting && target == 0 {
				continue // nothing written, nothing left young: no new garbage
			}
			lastPuts = puts
			rep, err := d.collector(r).Run(ctx, gc.Options{TargetSize: target, MinAge: minAge})
			switch {
			case errors.Is(err, store.ErrGCRunning):
			case err != nil && ctx.Err() == nil:
				a.log.Error("gc", "err", err)
			case err == nil:
				waiting = rep.KeptYoung > 0 || rep.KeptLive > 0
				gcs.add(rep)
				if rep.Removed > 0 {
					a.log.Info("gc", "removed", rep.Removed, "bytes", rep.RemovedBytes, "disk_after", rep.DiskAfter)
				}
			}
		}
	}
}

// autocommit commits the tree every interval when it changed.
func (a *app) autocommit(ctx context.Context, r *repo, tree *worktree.Tree, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	d := &app{env: env{shared: r, tree: tree}, log: a.log}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			_, err := d.commit(ctx, r, versions.Commit{Message: "autocommit", Author: "ipfrs-mount"}, false)
			if err != nil && !errors.Is(err, versions.ErrNothingToCommit) && ctx.Err() == nil {
				a.log.Error("autocommit", "err", err)
			}
		}
	}
}

// prefetchCounters shows the prefetcher as the mount's read cache: a read
// is a hit when the prefetcher had warmed all of it.
type prefetchCounters struct{ p *prefetch.Prefetcher }

func (c prefetchCounters) CacheCounters() metrics.CacheCounters {
	s := c.p.Stats()
	return metrics.CacheCounters{Hits: s.Hits, Misses: s.Misses,
		PrefetchedBytes: s.Issued * s.Unit, PrefetchUsedBytes: s.Useful * s.Unit}
}

// lowPriority locks the calling goroutine to its thread and gives that
// thread the lowest CPU priority (nice 19) and the idle I/O class, so that
// background work yields to readers and writers. Threads the runtime starts
// later do not inherit it (a locked thread has them made by the runtime's
// template thread).
func lowPriority(log *slog.Logger) {
	runtime.LockOSThread()
	tid := unix.Gettid()
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, 19); err != nil {
		log.Debug("background gc: nice", "err", err)
	}
	const whoProcess, classIdle = 1, 3
	if _, _, e := unix.Syscall(unix.SYS_IOPRIO_SET, whoProcess, uintptr(tid), classIdle<<13); e != 0 {
		log.Debug("background gc: ioprio", "err", e)
	}
}
