package repository

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"golang.org/x/sys/unix"

	"github.com/ipfrs/ipfrs-mount/gc"
	"github.com/ipfrs/ipfrs-mount/metrics"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/versions"
	"github.com/ipfrs/ipfrs-mount/worktree"
)

// Collector is the repo's garbage collector: it marks from the open
// working tree when there is one (its files being written included), else
// from the tree as stored.
func (r *Repo) Collector() *gc.Collector {
	col := &gc.Collector{Store: r.store, History: r.history, Pins: r.pins}
	if t := r.openTree(); t != nil {
		col.Tree = t.LiveRoots
	} else {
		col.Tree = func(ctx context.Context, fn func(cid.Cid) error) error {
			return worktree.StoredRoots(ctx, r.store, fn)
		}
	}
	return col
}

// GC collects garbage once and counts the run (unless a dry run).
func (r *Repo) GC(ctx context.Context, o gc.Options) (gc.Report, error) {
	rep, err := r.Collector().Run(ctx, o)
	if err == nil && !o.DryRun {
		r.gcs.add(rep)
	}
	return rep, err
}

// GCCounters counts the collections of this process, for status and
// /metrics.
func (r *Repo) GCCounters() metrics.GCCounters { return r.gcs.get() }

type gcRecord struct {
	mu sync.Mutex
	c  metrics.GCCounters
}

func (g *gcRecord) add(rep gc.Report) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.c.Runs++
	g.c.FreedBytes += rep.RemovedBytes
	g.c.LastRun = time.Now()
}

func (g *gcRecord) get() metrics.GCCounters {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.c
}

// StartAutocommit commits the working tree every interval when it changed,
// until Close (or StopBackground).
func (r *Repo) StartAutocommit(every time.Duration) {
	r.Go(func(ctx context.Context) {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, err := r.Commit(ctx, versions.Commit{Message: "autocommit", Author: "ipfrs-mount"}, false)
				if err != nil && !errors.Is(err, versions.ErrNothingToCommit) && ctx.Err() == nil {
					r.log.Error("autocommit", "err", err)
				}
			}
		}
	})
}

// StartAutoGC collects garbage every interval (only above target when it
// is positive) when blocks were written since the last run or it kept some
// for being young, keeping blocks younger than minAge, on a thread of the
// lowest CPU and I/O priority, until Close (or StopBackground).
func (r *Repo) StartAutoGC(every, minAge time.Duration, target int64) {
	r.Go(func(ctx context.Context) {
		lowPriority(r.log)
		tick := time.NewTicker(every)
		defer tick.Stop()
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
				rep, err := r.GC(ctx, gc.Options{TargetSize: target, MinAge: minAge})
				switch {
				case errors.Is(err, store.ErrGCRunning):
				case err != nil && ctx.Err() == nil:
					r.log.Error("gc", "err", err)
				case err == nil:
					waiting = rep.KeptYoung > 0 || rep.KeptLive > 0
					if rep.Removed > 0 {
						r.log.Info("gc", "removed", rep.Removed, "bytes", rep.RemovedBytes, "disk_after", rep.DiskAfter)
					}
				}
			}
		}
	})
}

// lowPriority locks the calling goroutine to its thread and gives that
// thread the lowest CPU priority (nice 19) and the idle I/O class, so that
// background work yields to readers and writers. Threads the runtime starts
// later do not inherit it (a locked thread has them made by the runtime's
// template thread); the thread ends with the goroutine.
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
