package main

import (
	"context"
	"io"

	"github.com/ipfrs/ipfrs-mount/repository"
)

// forward runs args (the whole command line, global flags included) in the
// daemon serving the repo at dir. done is false when no daemon answers
// there, so the caller runs the command itself.
func forward(ctx context.Context, dir string, args []string, e env) (done bool, err error) {
	return repository.Forward(ctx, dir, repository.Request{Args: args, Cwd: e.cwd}, e.stdout, e.stderr)
}

// controlHandler runs the commands of control-socket clients in the mount
// daemon: each parses its own command line into its own app, and works on
// the daemon's repo (r, which it must not close) and mount (d).
func controlHandler(r *repo, d *daemonState) repository.Handler {
	return func(ctx context.Context, req repository.Request, stdout, stderr io.Writer) int {
		err := run(ctx, req.Args, env{stdout: stdout, stderr: stderr, cwd: req.Cwd, shared: r, daemon: d})
		return report(stderr, err)
	}
}
