package main

import (
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress is a byte-count progress bar on stderr, shown only when stderr is
// a terminal; otherwise every method does nothing.
type progress struct{ bar *progressbar.ProgressBar }

func (a *app) newProgress(total int64, what string) *progress {
	if !a.tty {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

func (p *progress) add(n int) {
	if p.bar != nil {
		_ = p.bar.Add(n)
	}
}

func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
