// Package names publishes branches under IPNS names: a repo key (ed25519,
// kept in the repo with mode 0600) signs IPNS records (boxo's ipns
// package: V1+V2 records, as Kubo writes and verifies them) whose value
// is a branch's tree, and the records are kept in the store's metadata,
// where the gateway serves them and from where commits republish them.
// Records of other keys (signed elsewhere) are kept after their signature
// is checked.
package names

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ipfrs/ipfrs-mount/store"
)

// KeyFile is the repo key's file name inside the repo directory.
const KeyFile = "ipns.key"

// Defaults of a published record.
const (
	DefaultTTL      = 5 * time.Minute     // how long a reader may cache it
	DefaultLifetime = 48 * time.Hour * 15 // how long it stays valid (30 days)
)

// Metadata keys: the record of each name, and the branch the repo's own
// name publishes.
const (
	recordPrefix = "ipns/record/"
	branchKey    = "ipns/branch"
)

// ErrNoRecord means no record is kept for a name.
var ErrNoRecord = errors.New("no IPNS record for this name")

// Key is the repo key.
type Key struct {
	priv crypto.PrivKey
	name ipns.Name
}

// Name is the IPNS name the key signs for.
func (k *Key) Name() ipns.Name { return k.name }

// LoadKey reads the repo key from repoDir; create makes one when there is
// none. A key file that others may read is refused: it would let them
// publish in the repo's name.
func LoadKey(repoDir string, create bool) (*Key, error) {
	p := filepath.Join(repoDir, KeyFile)
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		return newKey(p)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: no repo key: publish a branch first (name publish BRANCH)", p)
	case err != nil:
		return nil, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %#o: the repo key must be readable by its owner only (chmod 600 %s)", p, fi.Mode().Perm(), p)
	}
	priv, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: not a key: %w", p, err)
	}
	if priv.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%s: a %s key, want ed25519", p, priv.Type())
	}
	return keyOf(priv)
}

func newKey(p string) (*Key, error) {
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	b, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	// O_EXCL: two publishers racing never overwrite each other's key.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadKey(filepath.Dir(p), false)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(p)
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(p)
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return keyOf(priv)
}

func keyOf(priv crypto.PrivKey) (*Key, error) {
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return &Key{priv: priv, name: ipns.NameFromPeer(id)}, nil
}

// Records keeps IPNS records in a store's metadata.
type Records struct{ s *store.Badger }

// New returns the records kept in s.
func New(s *store.Badger) *Records { return &Records{s: s} }

// Get returns the record kept for name, as its bytes.
func (r *Records) Get(ctx context.Context, name ipns.Name) ([]byte, error) {
	b, err := r.s.GetMeta(ctx, recordPrefix+name.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("/ipns/%s: %w", name, ErrNoRecord)
	}
	return b, err
}

// Put keeps a record signed elsewhere, after checking it (see Verify). A
// record older (lower sequence) than the one kept is refused.
func (r *Records) Put(ctx context.Context, name ipns.Name, raw []byte) (*ipns.Record, error) {
	rec, _, err := Verify(name, raw)
	if err != nil {
		return nil, err
	}
	seq, _ := rec.Sequence()
	if old, err := r.Get(ctx, name); err == nil {
		if oldRec, err := ipns.UnmarshalRecord(old); err == nil {
			if oldSeq, err := oldRec.Sequence(); err == nil && oldSeq > seq {
				return nil, fmt.Errorf("/ipns/%s: sequence %d is older than the kept record's %d", name, seq, oldSeq)
			}
		}
	}
	return rec, r.s.SetMeta(ctx, recordPrefix+name.String(), raw)
}

// Publish signs a record naming tree with the repo key, one sequence
// number past the record kept for the key, keeps it, and notes branch as
// the branch the name follows (see Branch).
func (r *Records) Publish(ctx context.Context, k *Key, branch string, tree cid.Cid, ttl, lifetime time.Duration) (*ipns.Record, error) {
	var seq uint64
	if old, err := r.Get(ctx, k.name); err == nil {
		if oldRec, err := ipns.UnmarshalRecord(old); err == nil {
			if s, err := oldRec.Sequence(); err == nil {
				seq = s + 1
			}
		}
	} else if !errors.Is(err, ErrNoRecord) {
		return nil, err
	}
	rec, err := ipns.NewRecord(k.priv, path.FromCid(tree), seq, time.Now().Add(lifetime), ttl, ipns.WithV1Compatibility(true))
	if err != nil {
		return nil, fmt.Errorf("signing the IPNS record: %w", err)
	}
	raw, err := ipns.MarshalRecord(rec)
	if err != nil {
		return nil, err
	}
	err = r.s.UpdateMeta(ctx, func(t store.MetaTxn) error {
		if err := t.Set(recordPrefix+k.name.String(), raw); err != nil {
			return err
		}
		return t.Set(branchKey, []byte(branch))
	})
	return rec, err
}

// Branch is the branch the repo's name follows, "" if none was published.
func (r *Records) Branch(ctx context.Context) (string, error) {
	b, err := r.s.GetMeta(ctx, branchKey)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	return string(b), err
}

// Verify checks raw as a record of name (signature by name's key, validity
// not past) and returns it with the path it names.
func Verify(name ipns.Name, raw []byte) (*ipns.Record, path.Path, error) {
	if len(raw) > ipns.MaxRecordSize {
		return nil, nil, fmt.Errorf("/ipns/%s: record of %d bytes, over the %d allowed", name, len(raw), ipns.MaxRecordSize)
	}
	rec, err := ipns.UnmarshalRecord(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("/ipns/%s: %w", name, err)
	}
	if err := ipns.ValidateWithName(rec, name); err != nil {
		return nil, nil, fmt.Errorf("/ipns/%s: %w", name, err)
	}
	v, err := rec.Value()
	if err != nil {
		return nil, nil, fmt.Errorf("/ipns/%s: %w", name, err)
	}
	return rec, v, nil
}
