package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one part of the daemon /health asks about ("store", "fuse").
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// Health is the /health body. Its shape is stable.
type Health struct {
	Status string            `json:"status"` // "ok" or "fail"
	Checks map[string]string `json:"checks"` // part -> "ok" or what failed
}

// checkTimeout bounds each check: a hung FUSE server must not hang /health.
const checkTimeout = 2 * time.Second

// Handler serves /metrics (Prometheus text format) and /health: 200 when
// every check passes, else 503, with a Health body either way.
func (m *Mount) Handler(checks ...Check) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	h := &healthHandler{checks: checks, running: make([]chan struct{}, len(checks))}
	mux.Handle("/health", h)
	return mux
}

type healthHandler struct {
	checks []Check
	mu     sync.Mutex
	// running[i] is closed when the last run of check i ended; a check
	// stuck in the kernel (stat of a hung mount) is not started again.
	running []chan struct{}
}

func (h *healthHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	out := Health{Status: "ok", Checks: map[string]string{}}
	results := make([]error, len(h.checks))
	var wg sync.WaitGroup
	for i, c := range h.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = h.run(r.Context(), i, c)
		}()
	}
	wg.Wait()
	for i, c := range h.checks {
		if results[i] != nil {
			out.Status = "fail"
			out.Checks[c.Name] = results[i].Error()
		} else {
			out.Checks[c.Name] = "ok"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if out.Status != "ok" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(out)
}

var errStillRunning = errors.New("no answer to the previous check yet")

// run runs check i with a timeout; the check goes on in the background
// after a timeout, and until it returns the check fails at once.
func (h *healthHandler) run(ctx context.Context, i int, c Check) error {
	h.mu.Lock()
	if ch := h.running[i]; ch != nil {
		select {
		case <-ch:
		default:
			h.mu.Unlock()
			return errStillRunning
		}
	}
	done := make(chan struct{})
	h.running[i] = done
	h.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkTimeout)
	errc := make(chan error, 1)
	go func() {
		defer close(done)
		defer cancel()
		errc <- c.Run(ctx)
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(checkTimeout):
		return errors.New("no answer within " + checkTimeout.String())
	}
}
