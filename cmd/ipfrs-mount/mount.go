package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/repository"
	"github.com/ipfrs/ipfrs-mount/versions"
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
			fs.BoolVar(&f.compress, "compress", true, "store the tensors of safetensors and torch.save files compressed: byte-grouped and entropy-coded, safetensors tensors as deltas against the same tensor in the last file that had it (--compress=false: stored plainly)")
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
			f.remote.s3.addMount(fs)
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
	r, err := repository.Open(dir, repository.Options{Logger: a.log.With("mount", mnt), Compress: f.compress})
	if err != nil {
		return err
	}
	// The repo closes everything it opened, in reverse order: the control
	// socket and the background work first, the store last.
	closed := false
	defer func() {
		if !closed {
			r.Close()
		}
	}()
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
	f.remote.s3.history = r.History()
	blocks, closeRemote, err := f.remote.open(r.Store(), a.log)
	if err != nil {
		return err
	}
	mo := repository.MountOptions{
		AllowOther: f.allowOther, Debug: f.debug, ReadAheadKB: f.readAheadKB, FsName: fsName(dir),
		HashReads: f.hashReads, Blocks: blocks, BlocksClose: closeRemote, Passthrough: f.passthrough,
	}
	if f.prefetch {
		budget, _ := humanize.ParseBytes(f.prefetchBudget)
		mo.PrefetchBudget = int64(budget)
	}
	hotBytes, _ := humanize.ParseBytes(f.hotCache)
	mo.HotBytes = int64(hotBytes)
	m, err := r.Mount(ctx, mnt, mo)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	tree, _ := r.Tree(ctx) // open: Mount opened it
	d := &daemonState{repo: dir, mountpoint: mnt, pid: os.Getpid(), store: r.Store(), tree: tree,
		logFile: logPath, stop: stop, mount: m, started: m.Metrics().Started()}
	if d.s3 = f.remote.tier; d.s3 != nil {
		m.Metrics().Registry().MustRegister(s3Metrics(d.s3)...)
		r.AfterCommit(func(context.Context, versions.Commit) { d.s3.Kick() })
	}
	if d.dev, err = checkMount(mnt); err != nil {
		return err
	}
	if f.gateway != "" {
		url, err := m.StartGateway(f.gateway)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "ipfrs-mount: serving the trustless gateway at %s\n", url)
	}
	if f.metricsAddr != "" {
		if err := m.ServeMetrics(f.metricsAddr, d.healthChecks()...); err != nil {
			return err
		}
	}
	if f.autocommit > 0 {
		r.StartAutocommit(f.autocommit)
	}
	if f.gcInterval > 0 {
		target, _ := humanize.ParseBytes(f.gcTargetSize)
		r.StartAutoGC(f.gcInterval, f.gcMinAge, int64(target))
	}
	shared := newRepo(r, true)
	if err := r.ServeControl(controlHandler(shared, d)); err != nil {
		return err
	}
	if err := writePidFile(dir); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	defer os.Remove(filepath.Join(dir, pidFileName))
	fmt.Fprintf(a.stderr, "ipfrs-mount: mounted %s at %s\n", dir, mnt)
	a.log.Info("mounted", "repo", dir, "pid", d.pid, "metrics", m.MetricsAddr())
	a.daemonReady(logPath)
	m.Wait(ctx)
	closed = true
	if err := r.Close(); err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "ipfrs-mount: unmounted %s\n", mnt)
	a.log.Info("unmounted")
	return nil
}
