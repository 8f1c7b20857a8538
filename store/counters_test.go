package store

import (
	"context"
	"testing"

	"github.com/ipfs/go-cid"
)

func TestCountersFollowTraffic(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{})
	a, b := blockOf(cid.Raw, make([]byte, 300)), blockOf(cid.Raw, []byte("small"))
	steps := []struct {
		name string
		do   func() error
		want Counters
	}{
		{"put a new block", func() error { return s.Put(ctx, a.CID, a.Data) },
			Counters{Puts: 1, PutBytes: 300}},
		{"put it again: deduplicated", func() error { return s.Put(ctx, a.CID, a.Data) },
			Counters{Puts: 1, PutBytes: 300, DupPuts: 1, DupPutBytes: 300}},
		{"put two, one new", func() error { return s.PutMany(ctx, []Block{a, b}) },
			Counters{Puts: 2, PutBytes: 305, DupPuts: 2, DupPutBytes: 600}},
		{"get one", func() error { _, err := s.Get(ctx, a.CID); return err },
			Counters{Gets: 1, GetBytes: 300, Puts: 2, PutBytes: 305, DupPuts: 2, DupPutBytes: 600}},
		{"a missing block counts nothing", func() error {
			_, err := s.Get(ctx, blockOf(cid.Raw, []byte("absent")).CID)
			if err == nil {
				t.Error("absent block found")
			}
			return nil
		}, Counters{Gets: 1, GetBytes: 300, Puts: 2, PutBytes: 305, DupPuts: 2, DupPutBytes: 600}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := s.Counters(); got != st.want {
			t.Fatalf("%s: counters %+v, want %+v", st.name, got, st.want)
		}
	}
}
