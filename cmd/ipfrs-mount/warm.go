package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"
)

func warmCommand() *command {
	return &command{
		name: "warm", args: "PATH...",
		help: "copy files of the mounted tree into the hot tier now, so that reads and mmap go at local-disk speed",
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() == 0 {
				return errors.New("no PATH given")
			}
			d := a.daemon
			if d == nil || d.mount.Hot() == nil {
				return errors.New("the repo is not mounted with a hot tier (mount --hot-cache SIZE)")
			}
			for _, p := range fs.Args() {
				rel, err := d.treePath(a.cwd, p)
				if err != nil {
					return err
				}
				ino, err := d.tree.LookupPath(rel)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				c, size, err := d.mount.Hot().Warm(ctx, ino)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				fmt.Fprintf(a.stdout, "%s\t%s\t%s\n", c, humanize.IBytes(size), p)
			}
			return nil
		},
	}
}

// treePath turns p (absolute, or relative to cwd) into a path inside the
// mounted tree.
func (d *daemonState) treePath(cwd, p string) (string, error) {
	if !filepath.IsAbs(p) {
		p = filepath.Join(cwd, p)
	}
	rel, err := filepath.Rel(d.mountpoint, filepath.Clean(p))
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is not under the mount %s", p, d.mountpoint)
	}
	if rel == "." {
		return "", nil
	}
	return rel, nil
}
