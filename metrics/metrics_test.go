package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ipfrs/ipfrs-mount/store"
)

type fakeCache struct{ c CacheCounters }

func (f fakeCache) CacheCounters() CacheCounters { return f.c }

func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the value of the family's metric whose labels include
// labels (a counter, a gauge, or a histogram's count).
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range labels {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsMove(t *testing.T) {
	st := store.Counters{Gets: 3, GetBytes: 300, Puts: 2, PutBytes: 200, DupPuts: 1, DupPutBytes: 100}
	m := New(Sources{Store: func() store.Counters { return st }, Cache: fakeCache{CacheCounters{Hits: 7, Misses: 2}}})
	m.Op("read", time.Millisecond, 0)
	m.Op("read", time.Millisecond, 0)
	m.Op("lookup", time.Microsecond, syscall.ENOENT)
	m.Read(4096)
	m.Written(10)
	m.Written(-1) // a failed write reports nothing
	m.OpenFiles(1)
	m.OpenFiles(1)
	m.OpenFiles(-1)
	fams := scrape(t, m.Handler())
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ipfrs_fuse_op_duration_seconds", map[string]string{"op": "read"}, 2},
		{"ipfrs_fuse_op_duration_seconds", map[string]string{"op": "lookup"}, 1},
		{"ipfrs_fuse_op_errors_total", map[string]string{"op": "lookup", "errno": "ENOENT"}, 1},
		{"ipfrs_fuse_read_bytes_total", nil, 4096},
		{"ipfrs_fuse_written_bytes_total", nil, 10},
		{"ipfrs_fuse_open_files", nil, 1},
		{"ipfrs_store_block_gets_total", nil, 3},
		{"ipfrs_store_block_puts_total", nil, 2},
		{"ipfrs_store_dedup_bytes_total", nil, 100},
		{"ipfrs_cache_hits_total", nil, 7},
		{"ipfrs_cache_misses_total", nil, 2},
	}
	for _, tt := range tests {
		got, ok := value(fams, tt.name, tt.labels)
		if !ok || got != tt.want {
			t.Errorf("%s%v = %v (present %v), want %v", tt.name, tt.labels, got, ok, tt.want)
		}
	}
	// Without a source, its metrics are absent, not zero.
	if _, ok := fams["ipfrs_gc_runs_total"]; ok {
		t.Error("gc metrics shown without a gc source")
	}
	st.Gets = 4 // read at scrape time
	if got, _ := value(scrape(t, m.Handler()), "ipfrs_store_block_gets_total", nil); got != 4 {
		t.Errorf("store gets after a change: %v", got)
	}
}

func TestHealth(t *testing.T) {
	ok := Check{"store", func(context.Context) error { return nil }}
	broken := Check{"fuse", func(context.Context) error { return errors.New("transport endpoint is not connected") }}
	release := make(chan struct{})
	defer close(release)
	hung := Check{"fuse", func(context.Context) error { <-release; return nil }}
	tests := []struct {
		name   string
		checks []Check
		code   int
		failed map[string]bool
	}{
		{"all answer", []Check{ok}, 200, nil},
		{"fuse gone", []Check{ok, broken}, 503, map[string]bool{"fuse": true}},
		{"fuse hung", []Check{ok, hung}, 503, map[string]bool{"fuse": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(Sources{}).Handler(tt.checks...)
			for range 2 { // the second time, a hung check fails at once
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
				var body Health
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatalf("body %q: %v", rec.Body, err)
				}
				if rec.Code != tt.code || (body.Status == "ok") != (tt.code == 200) {
					t.Fatalf("code %d, body %+v", rec.Code, body)
				}
				for _, c := range tt.checks {
					if failed := body.Checks[c.Name] != "ok"; failed != tt.failed[c.Name] {
						t.Errorf("check %s: %q", c.Name, body.Checks[c.Name])
					}
				}
			}
		})
	}
}
