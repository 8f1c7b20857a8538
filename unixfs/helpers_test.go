package unixfs

import (
	"testing"

	"github.com/ipfs/go-cid"
)

func mustCID(t *testing.T, s string) cid.Cid {
	t.Helper()
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
