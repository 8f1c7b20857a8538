package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/pin"
)

func pinCommand() *command {
	var name string
	var direct, asJSON bool
	return &command{
		name: "pin", args: "add [--name NAME] [--direct] CID | rm CID|NAME | ls [--json]",
		help: "keep DAGs from garbage collection (recursive by default; a NAME is an alias that add moves)",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&name, "name", "", "pin add: name the pin; adding the name again re-points it")
			fs.BoolVar(&direct, "direct", false, "pin add: keep the root block only")
			fs.BoolVar(&asJSON, "json", false, "pin ls: print JSON")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			args := fs.Args()
			if len(args) == 0 {
				return errors.New("want add, rm or ls")
			}
			switch sub, rest := args[0], args[1:]; {
			case sub == "add" && len(rest) == 1:
				return a.pinAdd(ctx, rest[0], name, direct)
			case sub == "rm" && len(rest) == 1:
				return a.pinRm(ctx, rest[0])
			case sub == "ls" && len(rest) == 0:
				return a.pinLs(ctx, asJSON)
			default:
				return fmt.Errorf("usage: pin add [--name NAME] [--direct] CID | pin rm CID|NAME | pin ls [--json]")
			}
		},
	}
}

func (a *app) pinAdd(ctx context.Context, arg, name string, direct bool) error {
	c, err := cid.Decode(arg)
	if err != nil {
		return fmt.Errorf("invalid CID %q: %w", arg, err)
	}
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	defer r.close()
	mode := pin.Recursive
	if direct {
		mode = pin.Direct
	}
	if ok, err := r.store.Has(ctx, c); err == nil && !ok {
		fmt.Fprintf(a.stderr, "ipfrs-mount: note: %s is not stored here; pinned anyway\n", c)
	}
	p, err := r.Pins().Add(ctx, c, name, mode)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "pinned %s %s%s\n", p.CID, p.Mode, nameSuffix(p.Name))
	return nil
}

func (a *app) pinRm(ctx context.Context, arg string) error {
	r, err := a.openRepo()
	if err != nil {
		return err
	}
	defer r.close()
	gone, err := r.Pins().Remove(ctx, arg)
	if err != nil {
		return err
	}
	for _, p := range gone {
		fmt.Fprintf(a.stdout, "unpinned %s %s%s\n", p.CID, p.Mode, nameSuffix(p.Name))
	}
	return nil
}

func nameSuffix(name string) string {
	if name == "" {
		return ""
	}
	return " " + name
}

// pinJSON is the shape of one pin in pin ls --json (one object per line).
type pinJSON struct {
	CID     string     `json:"cid"`
	Mode    pin.Mode   `json:"mode"`   // "recursive" | "direct"
	Name    string     `json:"name"`   // "" for unnamed pins
	Origin  pin.Origin `json:"origin"` // "pin" (pin add) | "add" (add or import)
	Created time.Time  `json:"created"`
}

func (a *app) pinLs(ctx context.Context, asJSON bool) error {
	r, err := a.openRepoReadOnly()
	if err != nil {
		return err
	}
	defer r.close()
	pins, err := r.Pins().List(ctx)
	if err != nil {
		return err
	}
	for _, p := range pins {
		if asJSON {
			b, _ := json.Marshal(pinJSON{CID: p.CID.String(), Mode: p.Mode, Name: p.Name, Origin: p.Origin, Created: p.Created})
			fmt.Fprintf(a.stdout, "%s\n", b)
			continue
		}
		fmt.Fprintf(a.stdout, "%s %s %s%s\n", p.CID, p.Mode, p.Origin, nameSuffix(p.Name))
	}
	return nil
}
