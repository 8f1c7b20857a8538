package pin

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/ipfrs/ipfrs-mount/store"
)

func openSet(t *testing.T) *Set {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return New(s)
}

func cidOf(s string) cid.Cid {
	h, _ := mh.Sum([]byte(s), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.DagProtobuf, h)
}

// listing renders the pin set compactly: cid-tag mode origin name.
func listing(t *testing.T, ps *Set, tags map[string]string) []string {
	t.Helper()
	pins, err := ps.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pins {
		out = append(out, fmt.Sprintf("%s %s %s %s", tags[p.CID.String()], p.Mode, p.Origin, p.Name))
	}
	return out
}

func TestAddRemoveList(t *testing.T) {
	ctx := context.Background()
	a, b := cidOf("a"), cidOf("b")
	tags := map[string]string{a.String(): "A", b.String(): "B"}
	type step struct {
		op   string // add, direct, name, added, rm
		c    cid.Cid
		arg  string // name, or rm's argument
		err  error
		want []string // the listing afterwards, sorted by CID then name
	}
	// a's CID string sorts after or before b's: compute the order once.
	ab := func(x, y []string) []string {
		if a.String() < b.String() {
			return append(x, y...)
		}
		return append(y, x...)
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"recursive, then removed by CID", []step{
			{op: "add", c: a, want: []string{"A recursive pin "}},
			{op: "rm", arg: a.String(), want: nil},
			{op: "rm", arg: a.String(), err: ErrNotPinned},
		}},
		{"a direct pin does not replace a recursive one", []step{
			{op: "add", c: a},
			{op: "direct", c: a, want: []string{"A direct pin ", "A recursive pin "}},
			{op: "add", c: a, want: []string{"A direct pin ", "A recursive pin "}},
		}},
		{"a name is re-pointed, not duplicated", []step{
			{op: "name", c: a, arg: "model", want: []string{"A recursive pin model"}},
			{op: "name", c: b, arg: "model", want: []string{"B recursive pin model"}},
			{op: "rm", arg: "model", want: nil},
		}},
		{"removing a name keeps the unnamed pin of the same CID", []step{
			{op: "add", c: a},
			{op: "name", c: a, arg: "n", want: []string{"A recursive pin ", "A recursive pin n"}},
			{op: "rm", arg: "n", want: []string{"A recursive pin "}},
		}},
		{"removing a CID removes every pin of it, add records included", []step{
			{op: "direct", c: a},
			{op: "added", c: a},
			{op: "name", c: a, arg: "n"},
			{op: "added", c: b, want: ab([]string{"A direct pin ", "A recursive add ", "A recursive pin n"}, []string{"B recursive add "})},
			{op: "rm", arg: a.String(), want: []string{"B recursive add "}},
		}},
		{"bad names", []step{
			{op: "name", c: a, arg: "a/b", err: ErrBadName},
			{op: "name", c: a, arg: a.String(), err: ErrBadName},
			{op: "name", c: a, arg: "x\ny", err: ErrBadName},
			{op: "rm", arg: "nothing", err: ErrNotPinned},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := openSet(t)
			for i, st := range tt.steps {
				var err error
				switch st.op {
				case "add":
					_, err = ps.Add(ctx, st.c, "", Recursive)
				case "direct":
					_, err = ps.Add(ctx, st.c, "", Direct)
				case "name":
					_, err = ps.Add(ctx, st.c, st.arg, Recursive)
				case "added":
					err = ps.RecordAdded(ctx, st.c, Added{Name: "x"})
				case "rm":
					_, err = ps.Remove(ctx, st.arg)
				}
				if !errors.Is(err, st.err) || (err != nil) != (st.err != nil) {
					t.Fatalf("step %d (%s %s): error %v, want %v", i, st.op, st.arg, err, st.err)
				}
				if st.want == nil && st.op != "rm" {
					continue
				}
				if got := listing(t, ps, tags); fmt.Sprint(got) != fmt.Sprint(st.want) {
					t.Fatalf("step %d (%s %s): pins %q, want %q", i, st.op, st.arg, got, st.want)
				}
			}
		})
	}
}
