// Package pin keeps the repo's pins: the DAG roots that garbage collection
// must keep, recursively or as single blocks, optionally under a name that
// can be moved to a new root. Content recorded by add and import counts as
// pinned too, until its pin is removed.
package pin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/ipfrs/ipfrs-mount/store"
)

// Metadata keys. An unnamed pin is keyed by its CID, a named one by its
// name (the alias); the records of add and import are keyed by CID.
const (
	cidPrefix   = "pins/cid/"  // + CID + "/" + mode -> record
	namePrefix  = "pins/name/" // + name -> record
	AddedPrefix = "roots/"     // + CID -> Added (written by add and import)
)

// Errors.
var (
	ErrNotPinned = errors.New("not pinned")
	ErrBadName   = errors.New("invalid pin name")
)

// Mode says how much of a DAG a pin keeps.
type Mode string

// Pin modes.
const (
	Recursive Mode = "recursive" // the root and everything it links to
	Direct    Mode = "direct"    // the root block only
)

// Origin says what made a pin.
type Origin string

// Pin origins.
const (
	OriginPin Origin = "pin" // pin add
	OriginAdd Origin = "add" // add or import recorded the content
)

// Pin is one entry of the pin set.
type Pin struct {
	CID     cid.Cid
	Mode    Mode
	Name    string // "" for an unnamed pin
	Origin  Origin
	Created time.Time
}

type record struct {
	CID     string    `json:"cid"`
	Mode    Mode      `json:"mode"`
	Created time.Time `json:"created"`
}

// Added is the record add and import keep of a root they stored, so that
// stat can tell the logical size of what the repo holds.
type Added struct {
	Name  string    `json:"name"`
	Size  uint64    `json:"size"`
	Added time.Time `json:"added"`
	// Partial is why the DAG is incomplete or inconsistent, for a root
	// imported with --allow-partial; empty for a complete one.
	Partial string `json:"partial,omitempty"`
}

// Set is the pin set of one store.
type Set struct{ s *store.Badger }

// New returns the pin set kept in s.
func New(s *store.Badger) *Set { return &Set{s: s} }

// ValidName reports whether name can name a pin: not empty, at most 255
// bytes, no slash or control characters, and not parseable as a CID (so
// that pin rm ARG is never ambiguous).
func ValidName(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsAny(name, "/\x00\n") {
		return fmt.Errorf("%w %q", ErrBadName, name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w %q", ErrBadName, name)
		}
	}
	if _, err := cid.Decode(name); err == nil {
		return fmt.Errorf("%w %q: it reads as a CID", ErrBadName, name)
	}
	return nil
}

// Add pins c. With a name the pin is an alias: adding the name again
// re-points it to c in one step. The DAG need not be complete or even
// stored. It returns the pin as recorded.
func (ps *Set) Add(ctx context.Context, c cid.Cid, name string, mode Mode) (Pin, error) {
	if !c.Defined() {
		return Pin{}, errors.New("pin: undefined CID")
	}
	if mode != Recursive && mode != Direct {
		return Pin{}, fmt.Errorf("pin: unknown mode %q", mode)
	}
	key := cidPrefix + c.String() + "/" + string(mode)
	if name != "" {
		if err := ValidName(name); err != nil {
			return Pin{}, err
		}
		key = namePrefix + name
	}
	// A GC running now has already read the pins: protect the DAG until
	// the record is written.
	tp := ps.s.TempPin()
	defer tp.Release()
	tp.Protect(c)
	rec := record{CID: c.String(), Mode: mode, Created: time.Now().UTC().Round(0)}
	b, err := json.Marshal(rec)
	if err != nil {
		return Pin{}, err
	}
	if err := ps.s.SetMeta(ctx, key, b); err != nil {
		return Pin{}, fmt.Errorf("pin: %w", err)
	}
	if err := ps.s.Sync(); err != nil {
		return Pin{}, err
	}
	return Pin{CID: c, Mode: mode, Name: name, Origin: OriginPin, Created: rec.Created}, nil
}

// RecordAdded notes a root that add or import stored; it is pinned
// recursively until removed with Remove.
func (ps *Set) RecordAdded(ctx context.Context, c cid.Cid, a Added) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := ps.s.SetMeta(ctx, AddedPrefix+c.String(), b); err != nil {
		return fmt.Errorf("pin: %w", err)
	}
	return nil
}

// AddedRoots calls fn for every root add and import recorded.
func (ps *Set) AddedRoots(ctx context.Context, fn func(c cid.Cid, a Added) error) error {
	return ps.s.ScanMeta(ctx, AddedPrefix, func(key string, val []byte) error {
		c, err := cid.Decode(key[len(AddedPrefix):])
		if err != nil {
			return fmt.Errorf("pin: bad root record %q: %w", key, err)
		}
		var a Added
		if err := json.Unmarshal(val, &a); err != nil {
			return fmt.Errorf("pin: bad root record %q: %w", key, err)
		}
		return fn(c, a)
	})
}

// Remove unpins arg: the named pin if a pin has that name, else every pin
// of the CID arg (unnamed, named, and the record of add or import). It
// returns what it removed, or ErrNotPinned.
func (ps *Set) Remove(ctx context.Context, arg string) ([]Pin, error) {
	all, err := ps.List(ctx)
	if err != nil {
		return nil, err
	}
	var gone []Pin
	for _, p := range all {
		if p.Name != "" && p.Name == arg {
			gone = append(gone, p)
		}
	}
	if len(gone) == 0 {
		c, err := cid.Decode(arg)
		if err != nil {
			return nil, fmt.Errorf("%q: %w (neither a pin name nor a CID)", arg, ErrNotPinned)
		}
		for _, p := range all {
			if string(p.CID.Hash()) == string(c.Hash()) {
				gone = append(gone, p)
			}
		}
	}
	if len(gone) == 0 {
		return nil, fmt.Errorf("%s: %w", arg, ErrNotPinned)
	}
	err = ps.s.UpdateMeta(ctx, func(tx store.MetaTxn) error {
		for _, p := range gone {
			if err := tx.Delete(p.key()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pin: %w", err)
	}
	return gone, ps.s.Sync()
}

func (p Pin) key() string {
	switch {
	case p.Origin == OriginAdd:
		return AddedPrefix + p.CID.String()
	case p.Name != "":
		return namePrefix + p.Name
	default:
		return cidPrefix + p.CID.String() + "/" + string(p.Mode)
	}
}

// List returns every pin, ordered by CID, then name.
func (ps *Set) List(ctx context.Context) ([]Pin, error) {
	var out []Pin
	scan := func(prefix string, named bool) error {
		return ps.s.ScanMeta(ctx, prefix, func(key string, val []byte) error {
			var r record
			if err := json.Unmarshal(val, &r); err != nil {
				return fmt.Errorf("pin: bad record %q: %w", key, err)
			}
			c, err := cid.Decode(r.CID)
			if err != nil {
				return fmt.Errorf("pin: bad record %q: %w", key, err)
			}
			p := Pin{CID: c, Mode: r.Mode, Origin: OriginPin, Created: r.Created}
			if named {
				p.Name = key[len(prefix):]
			}
			out = append(out, p)
			return nil
		})
	}
	if err := scan(cidPrefix, false); err != nil {
		return nil, err
	}
	if err := scan(namePrefix, true); err != nil {
		return nil, err
	}
	err := ps.AddedRoots(ctx, func(c cid.Cid, a Added) error {
		out = append(out, Pin{CID: c, Mode: Recursive, Origin: OriginAdd, Created: a.Added})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool {
		if a, b := out[i].CID.String(), out[j].CID.String(); a != b {
			return a < b
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}
