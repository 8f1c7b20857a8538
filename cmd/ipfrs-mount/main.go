// Command ipfrs-mount stores files as content-addressed IPFS UnixFS DAGs in
// an embedded block store and moves them in and out: add, cat, ls, stat,
// export and import of CARs, verify.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

// command is one subcommand.
type command struct {
	name, args, help string
	run              func(ctx context.Context, a *app, fs *pflag.FlagSet) error
	flags            func(fs *pflag.FlagSet)
}

// app holds what every command shares: where the repo is and where output goes.
type app struct {
	repoPath string
	stdout   io.Writer
	stderr   *os.File
	log      *slog.Logger
}

func commands() []*command {
	return []*command{
		addCommand(), catCommand(), lsCommand(), statCommand(),
		exportCommand(), importCommand(), verifyCommand(), mountCommand(),
	}
}

func main() {
	if p := os.Getenv("IPFRS_CPUPROFILE"); p != "" {
		f, _ := os.Create(p)
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var u usageError
		if !errors.As(err, &u) {
			fmt.Fprintf(os.Stderr, "ipfrs-mount: %s\n", oneLine(err))
		}
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// usageError has already been reported with the usage text.
type usageError struct{ error }

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

func run(ctx context.Context, args []string, stdout io.Writer, stderr *os.File) error {
	a := &app{stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	global := pflag.NewFlagSet("ipfrs-mount", pflag.ContinueOnError)
	global.SetInterspersed(false)
	global.SetOutput(stderr)
	addRepoFlag(global, a)
	help := global.BoolP("help", "h", false, "show help")
	cmds := commands()
	global.Usage = func() { usage(stderr, global, cmds) }
	if err := global.Parse(args); err != nil {
		return err
	}
	if *help || global.NArg() == 0 {
		usage(stderr, global, cmds)
		if *help {
			return nil
		}
		return usageError{errors.New("no command")}
	}
	name := global.Arg(0)
	for _, c := range cmds {
		if c.name != name {
			continue
		}
		fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
		fs.SetOutput(stderr)
		addRepoFlag(fs, a)
		if c.flags != nil {
			c.flags(fs)
		}
		fs.Usage = func() {
			fmt.Fprintf(stderr, "usage: ipfrs-mount %s %s\n\n%s\n\nflags:\n%s", c.name, c.args, c.help, fs.FlagUsages())
		}
		if err := fs.Parse(global.Args()[1:]); err != nil {
			if errors.Is(err, pflag.ErrHelp) {
				return nil
			}
			return fmt.Errorf("%s: %w", c.name, err)
		}
		if err := c.run(ctx, a, fs); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		return nil
	}
	return fmt.Errorf("unknown command %q (run ipfrs-mount --help)", name)
}

func addRepoFlag(fs *pflag.FlagSet, a *app) {
	fs.StringVar(&a.repoPath, "repo", a.repoPath, "repo directory (default $IPFRS_PATH, else ~/.ipfrs)")
}

func usage(w io.Writer, global *pflag.FlagSet, cmds []*command) {
	fmt.Fprintf(w, "usage: ipfrs-mount [--repo DIR] COMMAND [ARGS]\n\ncommands:\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.help)
	}
	fmt.Fprintf(w, "\nglobal flags:\n%s\nRun 'ipfrs-mount COMMAND --help' for a command's flags.\n", global.FlagUsages())
}
