package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/bench"
	"github.com/ipfrs/ipfrs-mount/fusefs"
)

// The read-path benchmark: every measure is taken next to its baseline in
// the same run, and reported as a ratio, because this machine is shared and
// noisy. Caches are dropped before each cold read, so it needs root.
type benchFlags struct {
	model, loader, dir string
	reps               int
	randomReads        int
}

func benchCommand() *command {
	f := &benchFlags{}
	return &command{
		name: "bench", args: "--model FILE [--reps N]", local: true,
		help: "measure the read path against an in-memory go-fuse mount and native ext4 (root: drops caches)",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&f.model, "model", "", "a model file (e.g. from gen_models.py) to store and read back")
			fs.IntVar(&f.reps, "reps", 3, "repetitions; medians are reported")
			fs.StringVar(&f.loader, "loader", "integration/testdata/load_safetensors.py", "PyTorch mmap loader run with /usr/bin/python3 for P3 (\"\" to skip)")
			fs.StringVar(&f.dir, "dir", "", "work directory on the disk to measure (default: a temp dir)")
			fs.IntVar(&f.randomReads, "random-reads", 2000, "random reads per size")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if f.model == "" {
				return errors.New("--model FILE is required")
			}
			if os.Geteuid() != 0 {
				return errors.New("bench drops the page cache between cold reads: run it as root")
			}
			return a.bench(ctx, f)
		},
	}
}

// benchEnv is one run's mounts and files.
type benchEnv struct {
	a                  *app
	f                  *benchFlags
	work, repo, native string
	mnt, memMnt        string
	size               int64
	peakAnon           atomic.Int64 // KiB, over every daemon the run started
}

func (a *app) bench(ctx context.Context, f *benchFlags) error {
	work := f.dir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "ipfrs-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	e := &benchEnv{a: a, f: f, work: work, repo: filepath.Join(work, "repo"), native: filepath.Join(work, "native.bin"),
		mnt: filepath.Join(work, "mnt"), memMnt: filepath.Join(work, "memfs")}
	for _, d := range []string{e.mnt, e.memMnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if f.loader != "" {
		if _, err := os.Stat(f.loader); err != nil {
			return fmt.Errorf("loader: %w (--loader \"\" skips P3)", err)
		}
	}

	// The baseline: the same bytes in memory behind the same mount options.
	mem, err := fusefs.MountNode(e.memMnt, bench.NewMemFS(), fusefs.MountOptions{ReadAheadKB: 16384})
	if err != nil {
		return err
	}
	defer mem.Unmount()
	fmt.Fprintf(a.stderr, "copying %s to ext4, memfs and ipfrs-mount...\n", f.model)
	for _, dst := range []string{e.native, filepath.Join(e.memMnt, "m")} {
		if err := copyTo(f.model, dst); err != nil {
			return err
		}
	}
	d, err := e.mount(ctx, "--hot-cache", "0")
	if err != nil {
		return err
	}
	err = copyTo(f.model, filepath.Join(e.mnt, "m"))
	d.stop()
	if err != nil {
		return err
	}
	fi, err := os.Stat(f.model)
	if err != nil {
		return err
	}
	e.size = fi.Size()

	res := map[string][]float64{}
	add := func(k string, v float64) { res[k] = append(res[k], v) }
	for rep := range f.reps {
		fmt.Fprintf(a.stderr, "rep %d/%d\n", rep+1, f.reps)
		// The cold path: no hot tier, blocks from the store.
		d, err := e.mount(ctx, "--hot-cache", "0")
		if err != nil {
			return err
		}
		if err := e.measure(ctx, "", add); err != nil {
			d.stop()
			return err
		}
		d.stop()
		// The hot path: a flat copy served by passthrough (or mmap).
		d, err = e.mount(ctx)
		if err != nil {
			return err
		}
		// The first warm copies the file; later ones check the copy the
		// last daemon left.
		if err := e.self(ctx, "warm", filepath.Join(e.mnt, "m")); err != nil {
			d.stop()
			return err
		}
		err = e.measure(ctx, "hot ", add)
		d.stop()
		if err != nil {
			return err
		}
	}
	e.report(res)
	return nil
}

// measure takes one round of measures of the mounted daemon; prefix names
// the configuration.
func (e *benchEnv) measure(ctx context.Context, prefix string, add func(string, float64)) error {
	m, mem := filepath.Join(e.mnt, "m"), filepath.Join(e.memMnt, "m")
	secs := func(k, path string, cold bool) error {
		if cold {
			dropCaches()
		}
		t, err := readAll(path)
		add(prefix+k, t)
		return err
	}
	steps := []struct {
		k, path string
		cold    bool
	}{
		{"cold read", m, true}, {"re-read", m, false},
		{"memfs cold read", mem, true},
	}
	for _, s := range steps {
		if err := secs(s.k, s.path, s.cold); err != nil {
			return err
		}
	}
	if _, err := readAll(e.native); err != nil {
		return err
	}
	if err := secs("ext4 re-read", e.native, false); err != nil {
		return err
	}
	for _, sz := range []int{4 << 10, 128 << 10} {
		name := fmt.Sprintf("random %d KiB reads/s", sz>>10)
		for _, p := range []struct{ k, path string }{{name, m}, {"memfs " + name, mem}} {
			dropCaches()
			r, err := randomReads(p.path, e.size, sz, e.f.randomReads)
			if err != nil {
				return err
			}
			add(prefix+p.k, r)
		}
	}
	if e.f.loader != "" {
		for _, p := range []struct{ k, path string }{{"P3 load", m}, {"ext4 P3 load", e.native}} {
			dropCaches()
			t, err := loadSeconds(ctx, e.f.loader, p.path)
			if err != nil {
				return err
			}
			add(prefix+p.k, t)
		}
	}
	return nil
}

func (e *benchEnv) report(res map[string][]float64) {
	med := func(k string) float64 {
		v := slices.Clone(res[k])
		if len(v) == 0 {
			return 0
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	gbs := func(t float64) string { return fmt.Sprintf("%.3f s (%.2f GB/s)", t, float64(e.size)/t/1e9) }
	w := tabwriter.NewWriter(e.a.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "measure\tipfrs-mount\tbaseline\tratio\tgoal\n")
	for _, p := range []string{"", "hot "} {
		row := func(name, k, bk string, goal string, rate bool) {
			v, b := med(p+k), med(p+bk)
			if v == 0 || b == 0 {
				return
			}
			ratio := b / v // time: baseline ÷ ours
			vs, bs := gbs(v), gbs(b)
			if rate {
				ratio = v / b
				vs, bs = fmt.Sprintf("%.0f/s", v), fmt.Sprintf("%.0f/s", b)
			}
			fmt.Fprintf(w, "%s%s\t%s\t%s\t%.2f\t%s\n", p, name, vs, bs, ratio, goal)
		}
		row("P1 cold sequential read ÷ memfs cold", "cold read", "memfs cold read", "≥ 0.8", false)
		row("P2 re-read ÷ ext4 page cache", "re-read", "ext4 re-read", "≥ 0.9", false)
		row("P3 load_safetensors cold ÷ ext4 cold", "P3 load", "ext4 P3 load", "≥ 1.5", false)
		row("random 4 KiB reads, cold ÷ memfs", "random 4 KiB reads/s", "memfs random 4 KiB reads/s", "", true)
		row("random 128 KiB reads, cold ÷ memfs", "random 128 KiB reads/s", "memfs random 128 KiB reads/s", "", true)
	}
	w.Flush()
	fmt.Fprintf(e.a.stdout, "daemon peak RssAnon: %d MiB (goal ≤ 300 MiB)\n", e.peakAnon.Load()>>10)
	fmt.Fprintf(e.a.stdout, "model %s, %d bytes, %d reps (medians)\n", e.f.model, e.size, e.f.reps)
}

// benchDaemon is a mount daemon the benchmark started.
type benchDaemon struct {
	cmd  *exec.Cmd
	mnt  string
	done chan struct{}
}

// mount starts this binary's mount daemon on the bench repo and samples
// its memory until it stops.
func (e *benchEnv) mount(ctx context.Context, args ...string) (*benchDaemon, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, append([]string{"--repo", e.repo, "mount", e.mnt}, args...)...)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &benchDaemon{cmd: cmd, mnt: e.mnt, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	for i := 0; ; i++ {
		if dev, err := checkMount(e.mnt); err == nil && dev != 0 {
			break
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("mount daemon exited: %v", cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if i > 400 {
			d.stop()
			return nil, errors.New("mount did not come up")
		}
	}
	go func() {
		for {
			if kb := rssAnonKiB(cmd.Process.Pid); kb > e.peakAnon.Load() {
				e.peakAnon.Store(kb)
			}
			select {
			case <-d.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return d, nil
}

func (d *benchDaemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// self runs another command of this binary against the bench repo.
func (e *benchEnv) self(ctx context.Context, args ...string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, exe, append([]string{"--repo", e.repo}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func rssAnonKiB(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func dropCaches() {
	syscall.Sync()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// copyTo writes a copy of src at dst in place (memfs cannot rename).
func copyTo(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 1<<20)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// readAll reads path sequentially with 1 MiB reads and returns seconds.
func readAll(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	for {
		_, err := f.Read(buf)
		if err == io.EOF {
			return time.Since(start).Seconds(), nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// randomReads does n reads of sz bytes at random aligned offsets and
// returns reads per second.
func randomReads(path string, size int64, sz, n int) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 2)) // the same offsets on both sides
	buf := make([]byte, sz)
	start := time.Now()
	for range n {
		off := rng.Int64N((size-int64(sz))/4096) * 4096
		if _, err := f.ReadAt(buf, off); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

var loadTime = regexp.MustCompile(` in ([0-9.]+) s `)

// loadSeconds runs the PyTorch loader on path and returns the load time it
// reports (the interpreter's start is not counted).
func loadSeconds(ctx context.Context, loader, path string) (float64, error) {
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", loader, path).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("loader on %s: %w: %s", path, err, out)
	}
	m := loadTime.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("loader on %s printed %q", path, out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
