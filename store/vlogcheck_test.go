package store

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
)

// storeBlocks writes blocks of random bytes to a new store in dir and
// closes it.
func storeBlocks(t *testing.T, dir string, seed uint64, n int) []Block {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 0))
	var blocks []Block
	for range n {
		data := make([]byte, 200<<10)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		b := blockOf(0x55, data)
		if err := s.Put(context.Background(), b.CID, b.Data); err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// alterValueLog changes the newest value-log file where data's bytes are.
func alterValueLog(t *testing.T, dir string, data []byte, change func(b []byte, at int)) {
	t.Helper()
	path, err := newestValueLog(dir)
	if err != nil || path == "" {
		t.Fatalf("newest value log: %q %v", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, data[:64])
	if at < 0 {
		t.Fatal("block not in the newest value log")
	}
	change(b, at)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Badger's read-write open cuts the newest value log at its first bad
// entry, dropping every block after it. Open refuses a value log damaged in
// the middle (read-only opens still work), and still opens one whose tail
// a crash left torn.
func TestOpenRefusesDamagedNewestValueLog(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		change  func(b []byte, at int, blockLen int)
		refused bool
	}{
		{"bit flipped in the first block", func(b []byte, at, n int) { b[at+1000] ^= 1 }, true},
		{"bit flipped in an entry's key", func(b []byte, at, n int) { b[at-30] ^= 0x40 }, true},
		{"torn last entry, zeros after", func(b []byte, at, n int) { clear(b[at+n/2:]) }, false},
		{"last entry with a page that never reached the disk", func(b []byte, at, n int) {
			clear(b[(at+8192)&^4095 : (at+8192)&^4095+4096])
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			blocks := storeBlocks(t, dir, 1, 6)
			victim := blocks[0]
			if !tt.refused {
				victim = blocks[len(blocks)-1]
			}
			alterValueLog(t, dir, victim.Data, func(b []byte, at int) { tt.change(b, at, len(victim.Data)) })
			s, err := Open(dir, Options{})
			if tt.refused {
				if !errors.Is(err, ErrDamagedValueLog) {
					if err == nil {
						s.Close()
					}
					t.Fatalf("open of a damaged value log: %v", err)
				}
				ro, err := Open(dir, Options{ReadOnly: true})
				if err != nil {
					t.Fatalf("read-only open: %v", err)
				}
				defer ro.Close()
				last := blocks[len(blocks)-1]
				if got, err := ro.Get(ctx, last.CID); err != nil || !bytes.Equal(got, last.Data) {
					t.Fatalf("read-only read of a block after the damage: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("open after a torn tail: %v", err)
			}
			defer s.Close()
			first := blocks[0]
			if got, err := s.Get(ctx, first.CID); err != nil || !bytes.Equal(got, first.Data) {
				t.Fatalf("block before the torn tail: %v", err)
			}
		})
	}
}

// A crash can leave a memtable file of zero bytes, which Badger cannot
// open; a read-write open removes it.
func TestOpenAfterEmptyMemtable(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b := blockOf(cid.Raw, []byte("kept"))
	if err := s.Put(ctx, b.CID, b.Data); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{ReadOnly: true}); !errors.Is(err, ErrNeedsRecovery) {
		t.Fatalf("read-only open after a crash left an empty memtable: %v, want ErrNeedsRecovery", err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("open after a crash left an empty memtable: %v", err)
	}
	defer s.Close()
	if got, err := s.Get(ctx, b.CID); err != nil || string(got) != "kept" {
		t.Fatalf("block after reopen: %q %v", got, err)
	}
}
