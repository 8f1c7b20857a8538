package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/s3tier"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/versions"
)

// s3Flags are the flags of the commands that use the shared S3 tier.
type s3Flags struct {
	url       string
	cache     string
	packSize  string
	every     time.Duration
	follow    []string
	push      bool              // set by mount: the tier uploads what the local refs reach
	rootsOnly bool              // add: push the queued roots, no branch
	history   *versions.History // the repo's, when mount has it
}

func (f *s3Flags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "s3", "", "shared S3 tier: s3://BUCKET[/PREFIX][?endpoint=http://HOST:PORT]; credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials")
}

// addMount adds what only mount takes.
func (f *s3Flags) addMount(fs *pflag.FlagSet) {
	fs.StringVar(&f.cache, "s3-cache", "4GiB", "with --s3: bytes of blocks read from the bucket kept in the repo (oldest go first; they stay in the bucket)")
	fs.StringVar(&f.packSize, "s3-pack-size", "32MiB", "with --s3: size of the packs blocks are uploaded in (larger: fewer requests; above 16MiB they go multipart)")
	fs.DurationVar(&f.every, "follow-interval", 2*time.Second, "with --follow: how often to look at the bucket's branch")
	fs.StringSliceVar(&f.follow, "follow", nil, "with --s3: keep local BRANCH at the bucket's newest commit of it (.versions/branches/BRANCH), never pushing it")
	f.push = true
}

func (f *s3Flags) enabled() bool { return f.url != "" }

// open opens the tier over s.
func (f *s3Flags) open(ctx context.Context, s *store.Badger, log *slog.Logger) (*s3tier.Tier, error) {
	loc, err := s3tier.ParseURL(f.url)
	if err != nil {
		return nil, err
	}
	if len(f.follow) > 0 && !f.enabled() {
		return nil, errors.New("--follow needs --s3")
	}
	o := s3tier.Options{Location: loc, Push: f.push, RootsOnly: f.rootsOnly, Follow: f.follow, FollowInterval: f.every, History: f.history, Logger: log}
	if f.cache != "" {
		n, err := humanize.ParseBytes(f.cache)
		if err != nil {
			return nil, fmt.Errorf("bad --s3-cache %q", f.cache)
		}
		o.CacheBytes = int64(n)
		if n == 0 {
			o.CacheBytes = -1
		}
	}
	if f.packSize != "" {
		n, err := humanize.ParseBytes(f.packSize)
		if err != nil || n == 0 || n > 4<<30 {
			return nil, fmt.Errorf("bad --s3-pack-size %q", f.packSize)
		}
		o.PackSize = int(n)
	}
	return s3tier.Open(ctx, s, o)
}

// pushRoots pushes content added to the repo and waits until the bucket
// has it: through the mount daemon's tier when it serves this bucket, else
// through one opened for the purpose.
func (a *app) pushRoots(ctx context.Context, f *s3Flags, s *store.Badger, roots []cid.Cid) error {
	var tier *s3tier.Tier
	if d := a.daemon; d != nil && d.s3 != nil && d.s3.Location().String() == mustLocation(f.url) {
		tier = d.s3
	} else {
		g := *f
		g.push, g.rootsOnly = true, true
		t, err := g.open(ctx, s, a.log)
		if err != nil {
			return err
		}
		defer t.Close()
		tier = t
	}
	for _, c := range roots {
		if err := tier.Enqueue(ctx, s3tier.KindRoot, c.String(), c); err != nil {
			return err
		}
	}
	return tier.Drain(ctx)
}

func mustLocation(u string) string {
	loc, err := s3tier.ParseURL(u)
	if err != nil {
		return ""
	}
	return loc.String()
}

// s3Metrics exports the tier's counters on /metrics.
func s3Metrics(t *s3tier.Tier) []prometheus.Collector {
	gauge := func(name, help string, v func(s3tier.Stats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(v(t.Stats())) })
	}
	counter := func(name, help string, v func(s3tier.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(t.Stats())) })
	}
	return []prometheus.Collector{
		gauge("ipfrs_s3_upload_queue", "Refs and roots waiting to be pushed to the bucket.", func(s s3tier.Stats) int64 { return s.Queue }),
		counter("ipfrs_s3_pushed_bytes_total", "Block bytes uploaded to the bucket in packs.", func(s s3tier.Stats) int64 { return s.PushedBytes }),
		counter("ipfrs_s3_packs_total", "Packs uploaded.", func(s s3tier.Stats) int64 { return s.Packs }),
		counter("ipfrs_s3_remote_reads_total", "Blocks read from the bucket (verified).", func(s s3tier.Stats) int64 { return s.RemoteReads }),
		counter("ipfrs_s3_remote_read_bytes_total", "Bytes of blocks read from the bucket.", func(s s3tier.Stats) int64 { return s.RemoteBytes }),
		counter("ipfrs_s3_cache_hits_total", "Block reads served by the repo without the bucket.", func(s s3tier.Stats) int64 { return s.CacheHits }),
		counter("ipfrs_s3_bad_blocks_total", "Blocks from the bucket that failed their CID.", func(s s3tier.Stats) int64 { return s.BadBlocks }),
		counter("ipfrs_s3_requests_total", "S3 requests made.", func(s s3tier.Stats) int64 { return s.GetRequests + s.PutRequests }),
		gauge("ipfrs_s3_cached_bytes", "Bytes of blocks from the bucket cached in the repo.", func(s s3tier.Stats) int64 { return s.CachedBytes }),
	}
}

// s3Verify checks every pack of the bucket and the DAGs of its refs.
func (a *app) s3Verify(ctx context.Context, url string, asJSON bool) error {
	t, err := openBucket(ctx, url, a.log)
	if err != nil {
		return err
	}
	defer t.Close()
	rep, err := t.Verify(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		json.NewEncoder(a.stdout).Encode(rep)
	} else {
		for _, p := range rep.BadPacks {
			fmt.Fprintf(a.stdout, "corrupt pack %s\n", p)
		}
		for _, b := range rep.BadBlocks {
			fmt.Fprintf(a.stdout, "corrupt block %s in pack %s\n", b.CID, b.Pack)
		}
		for _, p := range rep.Unreadable {
			fmt.Fprintf(a.stdout, "unreadable pack %s\n", p)
		}
		for _, c := range rep.Missing {
			fmt.Fprintf(a.stdout, "missing block %s (a ref needs it; no pack holds it)\n", c)
		}
		fmt.Fprintf(a.stdout, "%d packs, %d blocks, %s, %d refs checked\n", rep.Packs, rep.Blocks, humanize.IBytes(uint64(rep.Bytes)), rep.Refs)
	}
	if !rep.Clean() {
		return exitError(1)
	}
	return nil
}

// s3GC removes the bucket's packs that no ref needs.
func (a *app) s3GC(ctx context.Context, url string, o s3tier.CollectOptions, asJSON bool) error {
	t, err := openBucket(ctx, url, a.log)
	if err != nil {
		return err
	}
	defer t.Close()
	rep, err := t.Collect(ctx, o)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(a.stdout).Encode(rep)
	}
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	for _, p := range rep.Removed {
		fmt.Fprintf(a.stdout, "%s pack %s\n", verb, p)
	}
	fmt.Fprintf(a.stdout, "%d refs, %d packs, %d live blocks; %s %d packs (%s); kept %d young packs\n",
		rep.Refs, rep.Packs, rep.LiveBlocks, verb, len(rep.Removed), humanize.IBytes(uint64(rep.RemovedBytes)), rep.KeptYoung)
	return nil
}

func openBucket(ctx context.Context, url string, log *slog.Logger) (*s3tier.Tier, error) {
	loc, err := s3tier.ParseURL(url)
	if err != nil {
		return nil, err
	}
	return s3tier.OpenBucket(ctx, s3tier.Options{Location: loc, Logger: log})
}

// s3GCGrace is how long gc --s3 leaves packs condemned before removing
// them (s3tier.CollectOptions.Grace).
const s3GCGrace = 30 * time.Second
