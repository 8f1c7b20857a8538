package repository

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/fusefs"
	"github.com/ipfrs/ipfrs-mount/gateway"
	"github.com/ipfrs/ipfrs-mount/metrics"
	"github.com/ipfrs/ipfrs-mount/mmapio"
	"github.com/ipfrs/ipfrs-mount/prefetch"
	"github.com/ipfrs/ipfrs-mount/unixfs"
	"github.com/ipfrs/ipfrs-mount/versions"
)

// HotDir holds the hot tier's flat copies.
const HotDir = "hot"

// MountOptions configures Mount.
type MountOptions struct {
	AllowOther, Debug bool
	ReadAheadKB       int    // kernel readahead of the mount (0: the kernel's)
	FsName            string // the mount's source in mountinfo
	HashReads         bool   // hash every block on its first read
	// Blocks, if set, is where reads of the mount look blocks up (the
	// store behind remote gateways); BlocksClose then closes it, after the
	// mount and before the store.
	Blocks      unixfs.BlockViewer
	BlocksClose func()
	// PrefetchBudget > 0 reads ahead of readers, that many bytes at most.
	PrefetchBudget int64
	// HotBytes > 0 keeps a hot tier of that size in <repo>/hot.
	HotBytes    int64
	Passthrough bool
}

// Mount is the working tree served over FUSE by this process.
type Mount struct {
	r          *Repo
	mountpoint string
	server     *fuse.Server
	served     chan struct{} // closed when Wait saw the server end
	metrics    *metrics.Mount
	hot        *fusefs.Hot
	prefetch   *prefetch.Prefetcher
	blocks     unixfs.BlockViewer

	gatewayMu sync.Mutex
	gateways  []*gateway.Server
	stopped   bool

	metricsAddr string
}

// Mount serves the working tree at mountpoint (an absolute path to a
// directory) and returns once the mount answers. It opens, in this order,
// the working tree, the remote blocks, the prefetcher, the hot tier and the
// FUSE server; Close closes them in the reverse order, unmounting first if
// Wait has not seen the mount end.
func (r *Repo) Mount(ctx context.Context, mountpoint string, o MountOptions) (*Mount, error) {
	if o.BlocksClose != nil {
		r.OnClose("remote block source", func() error { o.BlocksClose(); return nil })
	}
	tree, err := r.Tree(ctx)
	if err != nil {
		return nil, err
	}
	m := &Mount{r: r, mountpoint: mountpoint, blocks: o.Blocks}
	if m.blocks == nil {
		m.blocks = r.store
	}
	src := metrics.Sources{Store: r.store.Counters, GC: r}
	if o.PrefetchBudget > 0 {
		m.prefetch = prefetch.New(prefetch.Options{Budget: o.PrefetchBudget})
		r.OnClose("prefetcher", func() error { m.prefetch.Close(); return nil })
		src.Cache = prefetchCounters{m.prefetch}
	}
	m.metrics = metrics.New(src)
	r.store.HashReads(o.HashReads)
	if o.HotBytes > 0 {
		tier, err := mmapio.Open(filepath.Join(r.dir, HotDir), o.HotBytes, r.log)
		if err != nil {
			return nil, err
		}
		m.hot = fusefs.NewHot(tier, tree, r.store, o.Passthrough, r.log)
		r.OnClose("hot tier", func() error { m.hot.Close(); return nil })
	}
	m.server, err = fusefs.Mount(mountpoint, tree, fusefs.MountOptions{
		History: mountHistory{r.history, r}, Blocks: m.blocks, Store: r.store,
		AllowOther: o.AllowOther, Debug: o.Debug, ReadAheadKB: o.ReadAheadKB, Logger: r.log,
		FsName: o.FsName, Observer: m.metrics, Prefetch: m.prefetch, Hot: m.hot,
	})
	if err != nil {
		return nil, err
	}
	m.served = make(chan struct{})
	r.OnClose("FUSE mount", func() error {
		select {
		case <-m.served: // Wait saw it end
		default:
			m.Unmount()
			m.server.Wait()
		}
		return nil
	})
	// After the server, so that they close before what it reads from.
	r.OnClose("gateways", func() error { m.closeGateways(); return nil })
	return m, nil
}

// mountHistory is the history as .versions uses it: the repo's one
// History, and tagging through the repo (so that it commits the tree in
// step with every other commit).
type mountHistory struct {
	*versions.History
	r *Repo
}

func (h mountHistory) TagTree(ctx context.Context, name string) (cid.Cid, error) {
	return h.r.TagTree(ctx, name, "")
}

var _ fusefs.History = mountHistory{}

// Mountpoint is where the tree is mounted.
func (m *Mount) Mountpoint() string { return m.mountpoint }

// Metrics is the mount's metrics.
func (m *Mount) Metrics() *metrics.Mount { return m.metrics }

// Hot is the mount's hot tier, nil without one.
func (m *Mount) Hot() *fusefs.Hot { return m.hot }

// Prefetcher is the mount's read-ahead, nil without one.
func (m *Mount) Prefetcher() *prefetch.Prefetcher { return m.prefetch }

// Blocks is where reads of the mount find blocks: the store, behind the
// remote gateways when the mount has some. Commands run by the daemon read
// through it too.
func (m *Mount) Blocks() unixfs.BlockViewer { return m.blocks }

// Unmount unmounts, once; a busy mount is retried, then detached lazily so
// that the daemon still serves open files until they are closed.
func (m *Mount) Unmount() {
	for i := 0; ; i++ {
		err := m.server.Unmount()
		if err == nil {
			return
		}
		if i == 20 {
			m.r.log.Warn("mount busy; detaching it", "err", err)
			_ = syscall.Unmount(m.mountpoint, syscall.MNT_DETACH)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Wait serves until the mount is gone: unmounted from outside, or by
// Wait itself when ctx ends. Before it unmounts, it stops the control
// socket and the background work, so that none of it runs against a tree
// being closed.
func (m *Mount) Wait(ctx context.Context) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			m.r.stopControl()
			m.r.StopBackground()
			m.Unmount()
		case <-done:
		}
	}()
	m.server.Wait()
	close(done)
	wg.Wait()
	close(m.served)
}

// StartGateway serves the repo's blocks as a trustless gateway on addr
// until Close, and returns its URL.
func (m *Mount) StartGateway(addr string) (string, error) {
	m.gatewayMu.Lock()
	defer m.gatewayMu.Unlock()
	if m.stopped {
		return "", errors.New("the mount daemon is stopping")
	}
	srv, err := gateway.Listen(addr, gateway.New(m.r.store, gateway.Options{Logger: m.r.log}), m.r.log)
	if err != nil {
		return "", err
	}
	m.gateways = append(m.gateways, srv)
	m.r.log.Info("serving a trustless gateway", "url", srv.URL())
	return srv.URL(), nil
}

func (m *Mount) closeGateways() {
	m.gatewayMu.Lock()
	m.stopped = true
	servers := m.gateways
	m.gateways = nil
	m.gatewayMu.Unlock()
	for _, s := range servers {
		s.Close()
	}
}

// ServeMetrics serves /metrics and /health (running checks) on addr until
// Close.
func (m *Mount) ServeMetrics(addr string, checks ...metrics.Check) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics: %w", err)
	}
	m.metricsAddr = ln.Addr().String()
	srv := &http.Server{Handler: m.metrics.Handler(checks...), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.r.log.Error("metrics server", "err", err)
		}
	}()
	m.r.OnClose("metrics server", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		if err != nil {
			srv.Close()
		}
		<-done
		return nil
	})
	return nil
}

// MetricsAddr is where /metrics listens, "" if nowhere.
func (m *Mount) MetricsAddr() string { return m.metricsAddr }

// prefetchCounters shows the prefetcher as the mount's read cache: a read
// is a hit when the prefetcher had warmed all of it.
type prefetchCounters struct{ p *prefetch.Prefetcher }

func (c prefetchCounters) CacheCounters() metrics.CacheCounters {
	s := c.p.Stats()
	return metrics.CacheCounters{Hits: s.Hits, Misses: s.Misses,
		PrefetchedBytes: s.FetchedBytes, PrefetchUsedBytes: s.UsedBytes}
}
