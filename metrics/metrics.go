package metrics

import (
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sys/unix"

	"github.com/ipfrs/ipfrs-mount/store"
)

// CacheCounters are what a read cache and a prefetcher report, totals since
// the mount started. The read path (prefetch/, hottier/) fills them.
type CacheCounters struct {
	Hits, Misses int64 // reads served from the cache, and not
	// PrefetchedBytes were fetched ahead of reads; PrefetchUsedBytes of
	// them were read before being dropped.
	PrefetchedBytes, PrefetchUsedBytes int64
}

// CacheSource reports cache counters.
type CacheSource interface{ CacheCounters() CacheCounters }

// GCCounters are what garbage collection reports.
type GCCounters struct {
	Runs       int64
	FreedBytes int64
	LastRun    time.Time // zero: never ran
}

// GCSource reports garbage-collection counters.
type GCSource interface{ GCCounters() GCCounters }

// Sources are the counters kept elsewhere that the mount exports. A nil
// source exports nothing: no metric is shown that nothing moves.
type Sources struct {
	Store func() store.Counters
	Cache CacheSource
	GC    GCSource
}

// Mount collects one mount's metrics. It implements fusefs.Observer.
type Mount struct {
	reg       *prometheus.Registry
	ops       *prometheus.HistogramVec
	errs      *prometheus.CounterVec
	read      prometheus.Counter
	written   prometheus.Counter
	openFiles atomic.Int64
	started   time.Time
	src       Sources
}

// New makes the metrics of a mount started now.
func New(src Sources) *Mount {
	m := &Mount{reg: prometheus.NewRegistry(), started: time.Now(), src: src}
	m.ops = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ipfrs_fuse_op_duration_seconds",
		Help:    "FUSE requests answered, by kind, and how long they took.",
		Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10), // 10 µs .. 2.6 s
	}, []string{"op"})
	m.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ipfrs_fuse_op_errors_total",
		Help: "FUSE requests answered with an error, by kind and errno (ENOENT on lookup is normal).",
	}, []string{"op", "errno"})
	m.read = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ipfrs_fuse_read_bytes_total", Help: "Bytes returned by FUSE reads."})
	m.written = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ipfrs_fuse_written_bytes_total", Help: "Bytes accepted by FUSE writes."})
	m.reg.MustRegister(m.ops, m.errs, m.read, m.written,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ipfrs_fuse_open_files", Help: "File handles open on the mount."},
			func() float64 { return float64(m.openFiles.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ipfrs_mount_start_time_seconds", Help: "When the mount started, Unix time."},
			func() float64 { return float64(m.started.UnixNano()) / 1e9 }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if st := src.Store; st != nil {
		m.counters(
			counterFunc{"ipfrs_store_block_gets_total", "Blocks read from the store.", func() int64 { return st().Gets }},
			counterFunc{"ipfrs_store_block_get_bytes_total", "Bytes of blocks read from the store (uncompressed).", func() int64 { return st().GetBytes }},
			counterFunc{"ipfrs_store_block_puts_total", "Blocks written to the store.", func() int64 { return st().Puts }},
			counterFunc{"ipfrs_store_block_put_bytes_total", "Bytes of blocks written to the store (uncompressed).", func() int64 { return st().PutBytes }},
			counterFunc{"ipfrs_store_dedup_blocks_total", "Block writes skipped because the block was stored already.", func() int64 { return st().DupPuts }},
			counterFunc{"ipfrs_store_dedup_bytes_total", "Bytes not written because they were stored already: what deduplication saved.", func() int64 { return st().DupPutBytes }},
		)
	}
	if c := src.Cache; c != nil {
		m.counters(
			counterFunc{"ipfrs_cache_hits_total", "Reads served from the cache.", func() int64 { return c.CacheCounters().Hits }},
			counterFunc{"ipfrs_cache_misses_total", "Reads the cache could not serve.", func() int64 { return c.CacheCounters().Misses }},
			counterFunc{"ipfrs_prefetch_bytes_total", "Bytes fetched ahead of reads.", func() int64 { return c.CacheCounters().PrefetchedBytes }},
			counterFunc{"ipfrs_prefetch_used_bytes_total", "Prefetched bytes that were then read.", func() int64 { return c.CacheCounters().PrefetchUsedBytes }},
		)
	}
	if g := src.GC; g != nil {
		m.counters(
			counterFunc{"ipfrs_gc_runs_total", "Garbage collections run.", func() int64 { return g.GCCounters().Runs }},
			counterFunc{"ipfrs_gc_freed_bytes_total", "Bytes garbage collected.", func() int64 { return g.GCCounters().FreedBytes }},
		)
	}
	return m
}

// counterFunc is a counter kept elsewhere, read at scrape time.
type counterFunc struct {
	name, help string
	value      func() int64
}

func (m *Mount) counters(cs ...counterFunc) {
	for _, c := range cs {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help},
			func() float64 { return float64(c.value()) }))
	}
}

// Registry is the mount's own registry.
func (m *Mount) Registry() *prometheus.Registry { return m.reg }

// Started is when the mount started.
func (m *Mount) Started() time.Time { return m.started }

// OpenFileCount is the number of file handles open now.
func (m *Mount) OpenFileCount() int64 { return m.openFiles.Load() }

// Sources returns what the mount exports besides its own counters.
func (m *Mount) Sources() Sources { return m.src }

// Op records one FUSE request.
func (m *Mount) Op(op string, d time.Duration, errno syscall.Errno) {
	m.ops.WithLabelValues(op).Observe(d.Seconds())
	if errno != 0 {
		name := unix.ErrnoName(errno)
		if name == "" {
			name = "errno" // unnamed: keep the label set small
		}
		m.errs.WithLabelValues(op, name).Inc()
	}
}

// Read records bytes read.
func (m *Mount) Read(n int) {
	if n > 0 {
		m.read.Add(float64(n))
	}
}

// Written records bytes written.
func (m *Mount) Written(n int) {
	if n > 0 {
		m.written.Add(float64(n))
	}
}

// OpenFiles records handles opened and released.
func (m *Mount) OpenFiles(delta int) { m.openFiles.Add(int64(delta)) }
