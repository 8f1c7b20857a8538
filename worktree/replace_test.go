package worktree

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/ipfrs/ipfrs-mount/safetensors"
)

// TestReplaceOneFile brings back an earlier version of one file: the path
// names a new inode with the old content, the directory keeps its other
// names.
func TestReplaceOneFile(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	d := e.create(RootIno, "ckpt", syscall.S_IFDIR|0o755)
	f := e.create(d, "model.bin", syscall.S_IFREG|0o644)
	e.create(d, "other", syscall.S_IFREG|0o644)
	e.write(f, 0, []byte("version one"))
	c, err := e.tree.CID(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(0)
	if _, err := e.tree.Setattr(ctx, f, SetAttr{Size: &n}); err != nil {
		t.Fatal(err)
	}
	e.write(f, 0, []byte("broken"))
	if err := e.tree.Flush(ctx, f); err != nil {
		t.Fatal(err)
	}
	changed, err := e.tree.Replace(ctx, "ckpt/model.bin", c)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || changed[0] != "ckpt" {
		t.Fatalf("changed %q", changed)
	}
	a, err := e.tree.Lookup(d, "model.bin")
	if err != nil {
		t.Fatal(err)
	}
	if a.Ino == f {
		t.Fatal("the path still names the old inode")
	}
	if got := e.read(a.Ino); string(got) != "version one" {
		t.Fatalf("after replace: %q", got)
	}
	if _, err := e.tree.Lookup(d, "other"); err != nil {
		t.Fatal(err)
	}
}

// TestTensorsCancelled: a caller whose context ends gets its error at once,
// and it is not kept: the next caller gets the table.
func TestTensorsCancelled(t *testing.T) {
	e := newEnv(t)
	f := e.create(RootIno, "m.safetensors", syscall.S_IFREG|0o644)
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, []safetensors.WriteTensor{{Name: "w", DType: safetensors.F32, Shape: []int64{1}, Data: []byte{0, 0, 0x80, 0x3f}}}, nil); err != nil {
		t.Fatal(err)
	}
	e.write(f, 0, buf.Bytes())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := e.tree.Tensors(ctx, f); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	h, _, err := e.tree.Tensors(context.Background(), f)
	if err != nil || len(h.Tensors) != 1 {
		t.Fatalf("after a cancelled call: %v %v", h, err)
	}
}
