package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// suiteSeed is the seed of a part's random choices, logged so a failure can
// be replayed with IPFRS_SEED.
func suiteSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("IPFRS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("IPFRS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d (IPFRS_SEED replays it)", seed)
	return seed
}

// suiteMount mounts repo in the foreground for the suite, sampling the
// daemon's memory.
func suiteMount(t *testing.T, c *tally, repo string, flags ...string) *mountDaemon {
	t.Helper()
	d := startMount(t, repo, flags...)
	c.watchRSS(t.Name(), d.cmd.Process.Pid)
	return d
}

// kill9 SIGKILLs a suite mount's daemon and removes the dead mount once
// nothing uses it.
func (d *mountDaemon) kill9(t *testing.T) {
	t.Helper()
	d.once.Do(func() {
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.exited
	})
}

// fileModel is what a name may hold after a crash, given what its writer
// did: the content its last completed fsync promised, and the byte ranges
// changed since (which may hold anything).
type fileModel struct {
	durable []byte     // content promised by the last fsync (or read back after a crash)
	exists  bool       // the name must exist after a crash
	gone    bool       // an unlink or rename away completed with a directory fsync: must not exist
	cur     []byte     // content as the writer sees it now
	curOK   bool       // the writer sees the name
	dirty   [][2]int64 // ranges written or truncated since durable
	minLen  int64      // the least size the name may have
	vanish  bool       // an unlink or rename away is in flight
	alt     []byte     // a rename over the name is in flight: it may hold exactly this
	hasAlt  bool
}

func (m *fileModel) isDirty(i int64) bool {
	for _, r := range m.dirty {
		if i >= r[0] && i < r[1] {
			return true
		}
	}
	return false
}

// settle makes what was read back after a crash the durable state.
func (m *fileModel) settle(data []byte, present bool) {
	*m = fileModel{durable: data, exists: present, cur: slices.Clone(data), curOK: present, minLen: int64(len(data)), gone: !present && m.gone}
}

// check compares what a name holds after a crash with the model.
func (m *fileModel) check(data []byte, present bool) error {
	switch {
	case !present && (!m.exists || m.vanish):
		return nil
	case !present:
		return errors.New("fsynced file is missing")
	case m.hasAlt && bytes.Equal(data, m.alt):
		return nil
	case m.gone:
		return errors.New("a name whose unlink (or rename away) and directory fsync completed is back")
	case !m.exists:
		return nil // never fsynced: any content
	}
	if int64(len(data)) < m.minLen {
		return fmt.Errorf("%d bytes, want at least %d", len(data), m.minLen)
	}
	for i := range int64(len(data)) {
		if m.isDirty(i) {
			continue
		}
		want := byte(0) // past the durable end only holes, which read as 0
		if i < int64(len(m.durable)) {
			want = m.durable[i]
		}
		if data[i] != want {
			return fmt.Errorf("byte %d is %#x, fsynced %#x (size %d, durable size %d, %d dirty ranges)",
				i, data[i], want, len(data), len(m.durable), len(m.dirty))
		}
	}
	return nil
}

// randomWriter does random operations on a few names in one directory and
// keeps the model of what each name may hold after a crash.
type randomWriter struct {
	dir    string // absolute, on the mount
	rng    *rand.Rand
	files  map[string]*fileModel
	ops    atomic.Int64
	fsyncs atomic.Int64
}

var randomNames = []string{"f0", "f1", "f2", "f3", "f4"}

func newRandomWriter(seed uint64) *randomWriter {
	w := &randomWriter{rng: rand.New(rand.NewPCG(seed, 2)), files: map[string]*fileModel{}}
	for _, n := range randomNames {
		w.files[n] = &fileModel{}
	}
	return w
}

// run does operations until one fails (the daemon was killed).
func (w *randomWriter) run() error {
	for {
		if err := w.step(); err != nil {
			return err
		}
		w.ops.Add(1)
	}
}

func (w *randomWriter) step() error {
	name := randomNames[w.rng.IntN(len(randomNames))]
	m := w.files[name]
	path := filepath.Join(w.dir, name)
	op := w.rng.IntN(10)
	if !m.curOK {
		op = 0 // create it first
	}
	switch {
	case op < 4: // write at a random offset, maybe past the end
		off := int64(w.rng.IntN(len(m.cur) + 64<<10))
		data := randomBytes(w.rng.Uint64(), 1+w.rng.IntN(256<<10))
		m.dirty = append(m.dirty, [2]int64{off, off + int64(len(data))})
		if !m.curOK {
			m.gone = false
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		_, err = f.WriteAt(data, off)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if end := off + int64(len(data)); end > int64(len(m.cur)) {
			m.cur = append(m.cur, make([]byte, end-int64(len(m.cur)))...)
		}
		copy(m.cur[off:], data)
		m.curOK = true
	case op < 6: // truncate, shorter or longer
		size := int64(w.rng.IntN(len(m.cur) + 128<<10))
		lo, hi := min(size, int64(len(m.cur))), max(size, int64(len(m.cur)))
		m.dirty = append(m.dirty, [2]int64{lo, hi})
		m.minLen = min(m.minLen, size)
		if err := os.Truncate(path, size); err != nil {
			return err
		}
		if size < int64(len(m.cur)) {
			m.cur = m.cur[:size]
		} else {
			m.cur = append(m.cur, make([]byte, size-int64(len(m.cur)))...)
		}
	case op < 8: // fsync: the content and the name become durable
		return w.fsync(name)
	case op < 9: // rename over another name, the checkpoint way
		dst := randomNames[w.rng.IntN(len(randomNames))]
		if dst == name {
			return nil
		}
		if err := w.fsync(name); err != nil {
			return err
		}
		d := w.files[dst]
		d.alt, d.hasAlt = slices.Clone(m.cur), true
		m.vanish = true
		if err := os.Rename(path, filepath.Join(w.dir, dst)); err != nil {
			return err
		}
		if err := fsyncPath(w.dir); err != nil {
			return err
		}
		*d = fileModel{durable: m.cur, exists: true, cur: slices.Clone(m.cur), curOK: true, minLen: int64(len(m.cur))}
		*m = fileModel{gone: true}
	default: // unlink
		m.vanish = true
		if err := os.Remove(path); err != nil {
			return err
		}
		if err := fsyncPath(w.dir); err != nil {
			return err
		}
		*m = fileModel{gone: true}
	}
	return nil
}

func (w *randomWriter) fsync(name string) error {
	m := w.files[name]
	f, err := os.OpenFile(filepath.Join(w.dir, name), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	w.fsyncs.Add(1)
	m.durable, m.exists, m.dirty, m.minLen = slices.Clone(m.cur), true, nil, int64(len(m.cur))
	m.gone = false
	return nil
}

// check compares every name with the model after a remount, then takes
// what it found as the durable state.
func (w *randomWriter) check(t *testing.T) bool {
	t.Helper()
	ok := true
	for _, name := range randomNames {
		m := w.files[name]
		data, err := os.ReadFile(filepath.Join(w.dir, name))
		present := err == nil
		if err != nil && !os.IsNotExist(err) {
			t.Errorf("%s: %v", filepath.Join(w.dir, name), err)
			ok = false
			continue
		}
		if err := m.check(data, present); err != nil {
			t.Errorf("%s: %v", filepath.Join(w.dir, name), err)
			ok = false
		}
		m.settle(data, present)
	}
	return ok
}

// crashRandomOps: writers create, write at random offsets, truncate,
// fsync, rename over and unlink; the daemon is SIGKILLed at a random
// moment; after the remount every fsynced byte must be there.
func crashRandomOps(t *testing.T, cfg reliabilityConfig, c *tally) {
	seed := suiteSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	repo := filepath.Join(t.TempDir(), "repo")
	writers := []*randomWriter{newRandomWriter(rng.Uint64()), newRandomWriter(rng.Uint64())}
	var totalOps, totalSyncs int64
	for round := range cfg.crashRounds {
		d := suiteMount(t, c, repo)
		for i, w := range writers {
			w.dir = filepath.Join(d.mnt, fmt.Sprintf("w%d", i))
			if round == 0 {
				if err := os.Mkdir(w.dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := fsyncPath(d.mnt); err != nil {
					t.Fatal(err)
				}
			} else if !w.check(t) {
				t.Fatalf("round %d: fsynced data lost or damaged by the crash before it (seed %d)", round, seed)
			}
		}
		c.run()
		var killed atomic.Bool
		var wg sync.WaitGroup
		for _, w := range writers {
			w.ops.Store(0)
			w.fsyncs.Store(0)
			wg.Go(func() {
				err := w.run()
				if !killed.Load() {
					t.Errorf("round %d: writer in %s failed before the crash: %v", round, w.dir, err)
				}
			})
		}
		time.Sleep(time.Duration(100+rng.IntN(600)) * time.Millisecond)
		killed.Store(true)
		d.kill9(t)
		c.fault(1)
		wg.Wait()
		if err := unmountDead(t, d.mnt); err != nil {
			t.Fatal(err)
		}
		for _, w := range writers {
			totalOps += w.ops.Load()
			totalSyncs += w.fsyncs.Load()
			c.op(int(w.ops.Load()))
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	d := suiteMount(t, c, repo)
	for i, w := range writers {
		w.dir = filepath.Join(d.mnt, fmt.Sprintf("w%d", i))
		if !w.check(t) {
			t.Errorf("after the last crash: fsynced data lost (seed %d)", seed)
		}
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
	t.Logf("%d rounds, %d operations, %d fsyncs completed", cfg.crashRounds, totalOps, totalSyncs)
}

// crashCheckpoints kills the daemon while files are replaced the way
// checkpoint writers do, remounts, and checks every name whose fsyncs had
// returned (the durableLog of mount_crash_test.go).
func crashCheckpoints(t *testing.T, cfg reliabilityConfig, c *tally) {
	seed := suiteSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	repo := filepath.Join(t.TempDir(), "repo")
	log := &durableLog{durable: map[string][32]byte{}, inFlight: map[string][32]byte{}}
	for round := range cfg.crashRounds {
		d := suiteMount(t, c, repo)
		if !log.check(t, d.mnt) {
			t.Fatalf("round %d: files lost or damaged by the crash before it", round)
		}
		c.run()
		var killed atomic.Bool
		var wg sync.WaitGroup
		for _, dir := range []string{".", "runs/ckpt"} {
			writerSeed := rng.Uint64()
			wg.Go(func() {
				err := crashWriter(d.mnt, dir, writerSeed, log)
				if !killed.Load() {
					t.Errorf("round %d: writer in %s failed before the crash: %v", round, dir, err)
				}
			})
		}
		time.Sleep(time.Duration(50+rng.IntN(451)) * time.Millisecond)
		killed.Store(true)
		d.kill9(t)
		c.fault(1)
		wg.Wait()
		if err := unmountDead(t, d.mnt); err != nil {
			t.Fatal(err)
		}
		c.op(4 * log.replaced) // write, fsync, rename, directory fsync
		log.replaced = 0
	}
	d := suiteMount(t, c, repo)
	log.check(t, d.mnt)
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	must(t, repo, "verify")
}

// startCLI starts one ipfrs-mount command whose stdout the test reads.
func startCLI(t *testing.T, repo string, args ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"--repo", repo}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, bufio.NewScanner(stdout)
}

// crashDuringCommit SIGKILLs the daemon while `commit` runs through its
// control socket. A commit that was reported is in the log after the
// remount, the fsynced files are intact, and the repo verifies.
func crashDuringCommit(t *testing.T, cfg reliabilityConfig, c *tally) {
	seed := suiteSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	repo := filepath.Join(t.TempDir(), "repo")
	rounds := max(3, cfg.crashRounds/5)
	want := map[string][]byte{}
	committed := 0
	for round := range rounds {
		d := suiteMount(t, c, repo)
		for name, data := range want {
			if got, err := os.ReadFile(filepath.Join(d.mnt, name)); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("round %d: %s after the crash: %v", round, name, err)
			}
		}
		if n := len(strings.Fields(strings.TrimSpace(string(mustRead(t, filepath.Join(d.mnt, ".versions", "log")))))); committed > 0 && n == 0 {
			t.Fatalf("round %d: %d commits were reported, the log is empty", round, committed)
		}
		// Some files written and fsynced, then commit and kill.
		for i := range 3 {
			name := fmt.Sprintf("r%d-%d.bin", round, i)
			data := randomBytes(rng.Uint64(), 1+rng.IntN(3<<20))
			if err := writeSynced(filepath.Join(d.mnt, name), data); err != nil {
				t.Fatal(err)
			}
			want[name] = data
			c.op(2)
		}
		cmd, out := startCLI(t, repo, "commit", "-m", fmt.Sprintf("round %d", round))
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		d.kill9(t)
		c.fault(1)
		c.run()
		var reported string
		for out.Scan() {
			reported += out.Text()
		}
		cmd.Wait()
		if err := unmountDead(t, d.mnt); err != nil {
			t.Fatal(err)
		}
		d2 := suiteMount(t, c, repo)
		if reported != "" {
			committed++
			logText := string(mustRead(t, filepath.Join(d2.mnt, ".versions", "log")))
			if f := strings.Fields(reported); len(f) == 0 || !strings.Contains(logText, lastCID(f)) {
				t.Fatalf("round %d: commit reported %q but the log after the crash is:\n%s", round, reported, logText)
			}
		}
		if err := d2.stop(); err != nil {
			t.Fatal(err)
		}
		must(t, repo, "verify")
	}
	t.Logf("%d rounds, %d commits reported before the kill", rounds, committed)
}

// lastCID picks the CID out of a commit's output.
func lastCID(fields []string) string {
	for i := len(fields) - 1; i >= 0; i-- {
		f := strings.Trim(fields[i], "[]():,")
		if strings.HasPrefix(f, "bafy") || strings.HasPrefix(f, "bafk") {
			return f
		}
	}
	return strings.Join(fields, " ")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// crashDuringGC SIGKILLs the daemon while it collects garbage (run through
// the control socket), after its first removals: the tree and the pinned
// file are intact, the repo verifies, and a later gc finishes the job.
func crashDuringGC(t *testing.T, cfg reliabilityConfig, c *tally) {
	repo := filepath.Join(t.TempDir(), "repo")
	keep := randomBytes(11, 4<<20)
	keepFile := filepath.Join(t.TempDir(), "keep.bin")
	writeFile(t, keepFile, keep)
	keepCID := strings.TrimSpace(must(t, repo, "add", "-Q", keepFile))
	src := filepath.Join(t.TempDir(), "many")
	for i := range 6000 {
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%05d", i)), randomBytes(uint64(1000+i), 512))
	}
	many := strings.TrimSpace(must(t, repo, "add", "-r", "-Q", src))
	must(t, repo, "pin", "rm", many)
	d := suiteMount(t, c, repo)
	tree := randomBytes(12, 5<<20)
	if err := writeSynced(filepath.Join(d.mnt, "tree.bin"), tree); err != nil {
		t.Fatal(err)
	}
	cmd, out := startCLI(t, repo, "gc")
	sawRemoval := false
	for out.Scan() {
		if strings.HasPrefix(out.Text(), "removed ") {
			sawRemoval = true
			break
		}
	}
	d.kill9(t)
	c.fault(1)
	c.run()
	cmd.Wait()
	if err := unmountDead(t, d.mnt); err != nil {
		t.Fatal(err)
	}
	if !sawRemoval {
		t.Fatal("gc printed no removal before it ended")
	}
	must(t, repo, "verify")
	if got := must(t, repo, "cat", keepCID); got != string(keep) {
		t.Fatal("the pinned file changed after the killed gc")
	}
	d = suiteMount(t, c, repo)
	if got, err := os.ReadFile(filepath.Join(d.mnt, "tree.bin")); err != nil || !bytes.Equal(got, tree) {
		t.Fatalf("tree.bin after the killed gc: %v", err)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if out, _ := runGC(t, repo, "--quiet"); out.Removed == 0 {
		t.Fatal("the gc after the crash found nothing left to remove")
	}
	must(t, repo, "verify")
	c.op(6000)
}

// crashDuringImport SIGKILLs `import` at random moments: the repo verifies
// each time, and a later import of the same CAR gives the whole DAG.
func crashDuringImport(t *testing.T, cfg reliabilityConfig, c *tally) {
	seed := suiteSeed(t)
	rng := rand.New(rand.NewPCG(seed, 4))
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	files := map[string][]byte{}
	for i := range 8 {
		files[fmt.Sprintf("f%d.bin", i)] = randomBytes(uint64(500+i), 6<<20)
		writeFile(t, filepath.Join(src, fmt.Sprintf("f%d.bin", i)), files[fmt.Sprintf("f%d.bin", i)])
	}
	exporter := filepath.Join(dir, "exporter")
	root := strings.TrimSpace(must(t, exporter, "add", "-r", "-Q", src))
	car := filepath.Join(dir, "tree.car")
	must(t, exporter, "export", root, "-o", car)
	repo := filepath.Join(dir, "repo")
	must(t, repo, "stat") // create it
	rounds := max(3, cfg.crashRounds/5)
	for range rounds {
		cmd := exec.Command(binary, "--repo", repo, "import", car)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		c.fault(1)
		c.run()
		must(t, repo, "verify")
	}
	if out := must(t, repo, "import", car); strings.TrimSpace(out) != root {
		t.Fatalf("import after the crashes printed %q", out)
	}
	for name, data := range files {
		if got := must(t, repo, "cat", root+"/"+name); got != string(data) {
			t.Fatalf("%s after the crashed imports differs", name)
		}
	}
	must(t, repo, "verify")
	c.op(rounds + 1)
}
