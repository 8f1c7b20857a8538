package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
)

// helperName is what mount(8) runs for `mount -t fuse.ipfrs` (it looks in
// /sbin); install makes it a link to the binary, which then behaves as the
// helper.
const helperName = "mount.fuse.ipfrs"

func installCommand() *command {
	var bindir, sbindir string
	return &command{
		name: "install", args: "[--bindir DIR] [--sbindir DIR]", local: true,
		help: "install this binary and the mount helper (" + helperName + ") for mount -t fuse.ipfrs and /etc/fstab",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&bindir, "bindir", "/usr/local/bin", "where the binary goes")
			fs.StringVar(&sbindir, "sbindir", "/sbin", "where the mount helper goes (mount(8) looks in /sbin)")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() != 0 {
				return errors.New("no arguments expected")
			}
			return a.install(a.abs(bindir), a.abs(sbindir))
		},
	}
}

func (a *app) install(bindir, sbindir string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return err
	}
	bin := filepath.Join(bindir, "ipfrs-mount")
	if err := os.MkdirAll(bindir, 0o755); err != nil {
		return err
	}
	if same, _ := sameFile(exe, bin); !same {
		if err := copyFile(exe, bin); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stdout, "installed %s\n", bin)
	if err := os.MkdirAll(sbindir, 0o755); err != nil {
		return err
	}
	helper := filepath.Join(sbindir, helperName)
	tmp := helper + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(bin, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, helper); err != nil {
		os.Remove(tmp)
		return err
	}
	fmt.Fprintf(a.stdout, "installed %s -> %s\n", helper, bin)
	return nil
}

func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}

// copyFile replaces dst with a copy of src, atomically (a running binary
// cannot be written in place).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// isMountHelper reports whether the binary runs as mount(8)'s helper.
func isMountHelper(argv0 string) bool {
	b := filepath.Base(argv0)
	return b == helperName || b == "mount.ipfrs"
}

// helperArgs translates mount(8)'s call of a helper,
// `mount.fuse.ipfrs REPO MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]`, into
// ipfrs-mount arguments: a daemon mount, so that mount returns once the
// mount answers. fake (-f) means do nothing.
func helperArgs(args []string) (out []string, fake bool, err error) {
	var pos, opts []string
	sloppy := false
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "-o" || arg == "-t" || arg == "-N":
			if i+1 >= len(args) {
				return nil, false, fmt.Errorf("%s needs a value", arg)
			}
			i++
			switch arg {
			case "-o":
				opts = append(opts, strings.Split(args[i], ",")...)
			case "-N":
				return nil, false, errors.New("-N (mount namespaces) is not supported")
			}
		case strings.HasPrefix(arg, "-o"):
			opts = append(opts, strings.Split(arg[2:], ",")...)
		case strings.HasPrefix(arg, "-") && len(arg) > 1:
			for _, c := range arg[1:] {
				switch c {
				case 's':
					sloppy = true
				case 'f':
					fake = true
				case 'n', 'v': // no mtab to write; verbose
				default:
					return nil, false, fmt.Errorf("unknown flag -%c", c)
				}
			}
		default:
			pos = append(pos, arg)
		}
	}
	if len(pos) != 2 {
		return nil, false, fmt.Errorf("usage: %s REPO MOUNTPOINT [-o OPTIONS]", helperName)
	}
	flags, err := helperFlags(opts, sloppy)
	if err != nil {
		return nil, false, err
	}
	out = append([]string{"--repo", pos[0], "mount", pos[1], "--daemon"}, flags...)
	return out, fake, nil
}

// helperFlags turns -o options into mount flags. Options mount(8) or the
// kernel handle, and fstab-only ones, are ignored.
func helperFlags(opts []string, sloppy bool) ([]string, error) {
	valued := map[string]string{
		"readahead_kb": "--readahead-kb", "autocommit": "--autocommit",
		"metrics": "--metrics", "log_level": "--log-level",
	}
	plain := map[string]string{"allow_other": "--allow-other", "compress": "--compress", "nocompress": "--compress=false", "debug": "--debug"}
	ignored := map[string]bool{
		"": true, "rw": true, "defaults": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
		"user": true, "nouser": true, "users": true, "owner": true, "group": true,
		"dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true, "noexec": true,
		"async": true, "atime": true, "noatime": true, "relatime": true, "strictatime": true,
		"nodiratime": true, "diratime": true, "default_permissions": true,
	}
	var flags []string
	for _, o := range opts {
		name, val, hasVal := strings.Cut(o, "=")
		switch {
		case ignored[name] && !hasVal, strings.HasPrefix(name, "x-"), name == "comment":
		case name == "ro":
			return nil, errors.New("read-only mounts are not supported (option ro)")
		case plain[name] != "" && !hasVal:
			flags = append(flags, plain[name])
		case valued[name] != "" && hasVal:
			flags = append(flags, valued[name], val)
		case sloppy:
		default:
			return nil, fmt.Errorf("unknown mount option %q", o)
		}
	}
	return flags, nil
}
