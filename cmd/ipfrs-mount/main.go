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
	"time"

	"github.com/spf13/pflag"

	"golang.org/x/term"

	"github.com/ipfrs/ipfrs-mount/repository"
	"github.com/ipfrs/ipfrs-mount/store"
)

// command is one subcommand.
type command struct {
	name, args, help string
	run              func(ctx context.Context, a *app, fs *pflag.FlagSet) error
	flags            func(fs *pflag.FlagSet)
	local            bool // runs in the calling process, never forwarded to the mount daemon
}

// app holds what every command shares: where the repo is and where output goes.
type app struct {
	env
	repoPath string
	lockWait time.Duration // how long to wait for another process writing the repo (Badger allows one)
	log      *slog.Logger
	args     []string // the command line, after the program name
}

// env is where a command runs: the terminal of a local process, or a
// control-socket client served by the mount daemon.
type env struct {
	stdout, stderr io.Writer
	tty            bool         // stderr is a terminal: show progress bars
	cwd            string       // relative paths are relative to this
	shared         *repo        // the daemon's open repo, when served over the socket
	daemon         *daemonState // and the mount it serves (fixed once it serves)
}

func commands() []*command {
	return []*command{
		addCommand(), catCommand(), lsCommand(), statCommand(),
		exportCommand(), importCommand(), verifyCommand(), mountCommand(),
		commitCommand(), logCommand(), showCommand(), diffCommand(),
		switchCommand(), resetCommand(), restoreCommand(), mergeCommand(),
		refCommand("branch", "list, create or delete branches"), refCommand("tag", "list, create or delete tags"),
		statusCommand(), unmountCommand("unmount"), unmountCommand("stop"), installCommand(),
		pinCommand(), gcCommand(), warmCommand(), benchCommand(), serveCommand(), publishCommand(),
	}
}

func main() {
	if p := os.Getenv("IPFRS_CPUPROFILE"); p != "" { // for profiling a command
		if f, err := os.Create(p); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cwd, _ := os.Getwd()
	args, err := os.Args[1:], error(nil)
	if isMountHelper(os.Args[0]) {
		var fake bool
		if args, fake, err = helperArgs(args); fake {
			args = nil
		}
	}
	if err == nil && args != nil {
		err = run(ctx, args, env{stdout: os.Stdout, stderr: os.Stderr,
			tty: term.IsTerminal(int(os.Stderr.Fd())), cwd: cwd})
	}
	stop()
	if code := report(os.Stderr, err); code != 0 {
		pprof.StopCPUProfile()
		os.Exit(code)
	}
}

// usageError has already been reported with the usage text.
type usageError struct{ error }

// report prints err as one line and returns the exit status.
func report(w io.Writer, err error) int {
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return int(exit)
	case !errors.As(err, new(usageError)):
		fmt.Fprintf(w, "ipfrs-mount: %s\n", oneLine(err))
	}
	return 1
}

// exitError carries the exit status of a command run by the daemon, whose
// messages were already printed.
type exitError = repository.ErrExit

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

func run(ctx context.Context, args []string, e env) error {
	stderr := e.stderr
	a := &app{env: e, args: args, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	global := pflag.NewFlagSet("ipfrs-mount", pflag.ContinueOnError)
	global.SetInterspersed(false)
	global.SetOutput(stderr)
	addRepoFlag(global, a)
	global.DurationVar(&a.lockWait, "lock-wait", 30*time.Second, "wait up to DURATION for another process that has the repo open for writing")
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
		if a.daemon != nil && (c.name == "mount" || c.name == "install") {
			return fmt.Errorf("%s: not over the control socket", c.name)
		}
		if a.shared != nil {
			// Run by the daemon: the repo is the daemon's, whatever the
			// client's flags or environment say.
			a.repoPath = a.shared.path
		}
		deadline := time.Now().Add(a.lockWait)
		for pause := 20 * time.Millisecond; ; pause = min(2*pause, time.Second) {
			if a.shared == nil && !c.local {
				// While the repo is mounted, the daemon holds it: ask the
				// daemon, with the whole command line.
				if dir, err := a.repoDir(); err == nil {
					if done, err := forward(ctx, dir, args, a.env); done {
						return err
					}
				}
			}
			err := c.run(ctx, a, fs)
			if errors.Is(err, store.ErrInUse) && a.shared == nil && time.Now().Before(deadline) {
				// Another process writes to the repo: a command run
				// unmounted (wait for it), or a mount daemon starting
				// (forward to it next time round).
				select {
				case <-ctx.Done():
				case <-time.After(pause):
					continue
				}
			}
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("unknown command %q (run ipfrs-mount --help)", name)
}

func addRepoFlag(fs *pflag.FlagSet, a *app) {
	fs.StringVar(&a.repoPath, "repo", a.repoPath, "repo directory (default $IPFRS_PATH, else ~/.ipfrs)")
}

func usage(w io.Writer, global *pflag.FlagSet, cmds []*command) {
	fmt.Fprintf(w, "usage: ipfrs-mount [--repo DIR] [--lock-wait D] COMMAND [ARGS]\n\ncommands:\n")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.help)
	}
	fmt.Fprintf(w, "\nglobal flags:\n%s\nRun 'ipfrs-mount COMMAND --help' for a command's flags.\n", global.FlagUsages())
}
