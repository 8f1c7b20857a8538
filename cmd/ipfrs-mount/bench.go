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

	"github.com/ipfrs/ipfrs-mount/fusefs"
)

// The read-path benchmark: every measure is taken next to its baseline in
// the same run, and reported as a ratio, because this machine is shared and
// noisy. Caches are dropped before each cold read, so it needs root.
type benchFlags struct {
	model, loader, dir string
	reps               int
	randomReads        int
	ranks              int
	torch              bool
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
			fs.IntVar(&f.ranks, "ranks", 0, "also load the model cold with N concurrent loader processes, each 1/N of the tensors in name order (as tensor-parallel ranks do)")
			fs.BoolVar(&f.torch, "torch", false, "also load with safetensors.torch.load_file (to cuda:0 when torch sees a GPU), cold and warm")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if f.model == "" {
				return errors.New("--model FILE is required")
			}
			if os.Geteuid() != 0 {
				return errors.New("bench drops the page cache between cold reads: run it as root")
			}
			if f.ranks > 0 && f.loader == "" {
				return errors.New("--ranks runs the --loader: give one")
			}
			if f.torch {
				if out, err := exec.Command("/usr/bin/python3", "-c", "import torch, safetensors.torch").CombinedOutput(); err != nil {
					return fmt.Errorf("--torch needs /usr/bin/python3 with torch and safetensors: %w: %s", err, out)
				}
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
	peakFile, peakHWM  atomic.Int64 // KiB: RssFile and VmHWM, the same way
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
	mem, err := fusefs.MountNode(e.memMnt, fusefs.NewMemFS(), fusefs.MountOptions{ReadAheadKB: 16384})
	if err != nil {
		return err
	}
	defer mem.Unmount()
	fmt.Fprintf(a.stderr, "copying %s to ext4, memfs and ipfrs-mount...\n", f.model)
	// Ingest: the model (in the page cache) copied to ext4 and synced,
	// against the same copy into the mount (the import runs as it is
	// written; close returns once it is stored) and synced.
	if _, err := readAll(f.model); err != nil {
		return err
	}
	start := time.Now()
	if err := copyTo(f.model, e.native); err != nil {
		return err
	}
	syscall.Sync()
	nativeCp := time.Since(start).Seconds()
	if err := copyTo(f.model, filepath.Join(e.memMnt, "m")); err != nil {
		return err
	}
	d, err := e.mount(ctx, "--hot-cache", "0")
	if err != nil {
		return err
	}
	start = time.Now()
	err = copyTo(f.model, filepath.Join(e.mnt, "m"))
	syscall.Sync()
	mountCp := time.Since(start).Seconds()
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
	res["ingest cp"], res["ext4 ingest cp"] = []float64{mountCp}, []float64{nativeCp}
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
			t, err := loadSeconds(ctx, "/usr/bin/python3", e.f.loader, p.path)
			if err != nil {
				return err
			}
			add(prefix+p.k, t)
			// Warm: the same load again, from the page cache.
			if t, err = loadSeconds(ctx, "/usr/bin/python3", e.f.loader, p.path); err != nil {
				return err
			}
			add(prefix+p.k+" warm", t)
		}
		if e.f.ranks > 0 {
			for _, p := range []struct{ k, path string }{{"ranks load", m}, {"ext4 ranks load", e.native}} {
				dropCaches()
				t, err := ranksSeconds(ctx, e.f.loader, p.path, e.f.ranks)
				if err != nil {
					return err
				}
				add(prefix+p.k, t)
			}
		}
	}
	if e.f.torch {
		for _, p := range []struct{ k, path string }{{"torch load", m}, {"ext4 torch load", e.native}} {
			dropCaches()
			t, err := loadSeconds(ctx, "/usr/bin/python3", "-c", torchLoader, p.path)
			if err != nil {
				return err
			}
			add(prefix+p.k, t)
			if t, err = loadSeconds(ctx, "/usr/bin/python3", "-c", torchLoader, p.path); err != nil {
				return err
			}
			add(prefix+p.k+" warm", t)
		}
	}
	return nil
}

// torchLoader is what the GPU table measured: the real safetensors loader
// to the GPU (or the CPU without one); it prints the loader's line format.
const torchLoader = `import sys, time, torch
from safetensors.torch import load_file
dev = "cuda:0" if torch.cuda.is_available() else "cpu"
sync = torch.cuda.synchronize if dev != "cpu" else (lambda: None)
sync(); t0 = time.perf_counter()
ts = load_file(sys.argv[1], device=dev); sync(); dt = time.perf_counter() - t0
nb = sum(x.numel() * x.element_size() for x in ts.values())
print(f"{len(ts)} tensors {nb/1e9:.3f} GB in {dt:.3f} s = {nb/1e9/dt:.2f} GB/s to {dev}")
`

// ranksSeconds starts n loader processes at once, rank r loading the
// tensors whose index in name order is r modulo n, and returns the time
// until the last has loaded its share (interpreter starts included, the
// same on both sides).
func ranksSeconds(ctx context.Context, loader, path string, n int) (float64, error) {
	start := time.Now()
	errs := make(chan error, n)
	for r := range n {
		go func() {
			out, err := exec.CommandContext(ctx, "/usr/bin/python3", loader, path, "--order", "name",
				"--rank", strconv.Itoa(r), "--world", strconv.Itoa(n)).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("rank %d on %s: %w: %s", r, path, err, out)
			}
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return time.Since(start).Seconds(), first
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
	if v, b := med("ingest cp"), med("ext4 ingest cp"); v > 0 {
		fmt.Fprintf(w, "cp into the mount + sync ÷ cp to ext4 + sync (once)\t%s\t%s\t%.2f\t≥ 0.8 (16 cores)\n", gbs(v), gbs(b), b/v)
	}
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
		row("P3 warm re-load ÷ ext4 warm", "P3 load warm", "ext4 P3 load warm", "≥ 0.95", false)
		row(fmt.Sprintf("%d ranks, 1/%d each, cold ÷ ext4", e.f.ranks, e.f.ranks), "ranks load", "ext4 ranks load", "≥ 0.9", false)
		row("torch load_file cold ÷ ext4 cold", "torch load", "ext4 torch load", "≥ 1.0", false)
		row("torch load_file warm ÷ ext4 warm", "torch load warm", "ext4 torch load warm", "≥ 0.95", false)
		row("random 4 KiB reads, cold ÷ memfs", "random 4 KiB reads/s", "memfs random 4 KiB reads/s", "", true)
		row("random 128 KiB reads, cold ÷ memfs", "random 128 KiB reads/s", "memfs random 128 KiB reads/s", "", true)
	}
	w.Flush()
	fmt.Fprintf(e.a.stdout, "daemon peak RssAnon: %d MiB (goal ≤ 300 MiB); peak RssFile %d MiB, VmHWM %d MiB (mapped value-log and hot-copy pages: clean, reclaimable)\n",
		e.peakAnon.Load()>>10, e.peakFile.Load()>>10, e.peakHWM.Load()>>10)
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
			m := procStatusKiB(cmd.Process.Pid, "RssAnon", "RssFile", "VmHWM")
			for i, peak := range []*atomic.Int64{&e.peakAnon, &e.peakFile, &e.peakHWM} {
				if m[i] > peak.Load() {
					peak.Store(m[i])
				}
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

// procStatusKiB reads fields of /proc/PID/status, in kB (0 if absent).
func procStatusKiB(pid int, fields ...string) []int64 {
	out := make([]int64, len(fields))
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for i, name := range fields {
			if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
				out[i], _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			}
		}
	}
	return out
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
func loadSeconds(ctx context.Context, args ...string) (float64, error) {
	path := args[len(args)-1]
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("loader on %s: %w: %s", path, err, out)
	}
	m := loadTime.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("loader on %s printed %q", path, out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
