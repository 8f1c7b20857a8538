package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/gateway"
)

func serveCommand() *command {
	var addr string
	return &command{
		name: "serve", args: "--gateway ADDR",
		help: "serve the repo's blocks as an IPFS trustless gateway (raw blocks and CARs; inside the mount daemon while mounted)",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&addr, "gateway", "", "listen on ADDR (host:port; port 0 picks one), e.g. 0.0.0.0:8080")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if addr == "" || fs.NArg() != 0 {
				return errors.New("want --gateway ADDR and no arguments")
			}
			return a.serve(ctx, addr)
		},
	}
}

// serve runs the gateway in the foreground until interrupted; over the
// control socket it starts it in the mount daemon, where it runs until
// the unmount.
func (a *app) serve(ctx context.Context, addr string) error {
	if a.daemon != nil {
		url, err := a.daemon.mount.StartGateway(addr)
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, url)
		fmt.Fprintf(a.stderr, "ipfrs-mount: the mount daemon serves the trustless gateway at %s until it unmounts\n", url)
		return nil
	}
	r, err := a.openRepoReadOnly()
	if err != nil {
		return err
	}
	defer r.close()
	srv, err := gateway.Listen(addr, gateway.New(r.store, gateway.Options{Logger: a.log}), a.log)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, srv.URL())
	fmt.Fprintf(a.stderr, "ipfrs-mount: serving %s as a trustless gateway at %s (Ctrl-C stops)\n", r.path, srv.URL())
	select {
	case <-ctx.Done():
	case <-srv.Done():
	}
	srv.Close()
	return nil
}
