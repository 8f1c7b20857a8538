package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/remote"
	"github.com/ipfrs/ipfrs-mount/s3tier"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// remoteFlags are the flags of the commands that read blocks missing
// locally from trustless gateways: mount, cat, export.
type remoteFlags struct {
	list    string
	timeout time.Duration
	retries int
	s3      s3Flags
	tier    *s3tier.Tier // the S3 tier open opened, if any
}

func (f *remoteFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.list, "remote", "", "fetch blocks missing here from these trustless gateways (URL[,URL...]); fetched blocks are verified, then cached in the repo until gc")
	fs.DurationVar(&f.timeout, "remote-timeout", 30*time.Second, "with --remote: give up on one gateway request after DURATION")
	fs.IntVar(&f.retries, "remote-retries", 2, "with --remote: rounds over the gateways after the first, with a doubling pause (0: none)")
	f.s3.add(fs)
}

func (f *remoteFlags) enabled() bool { return f.list != "" || f.s3.enabled() }

// open puts the gateways behind s; without --remote it returns s itself
// and a no-op close.
func (f *remoteFlags) open(s *store.Badger, log *slog.Logger) (unixfs.BlockViewer, func(), error) {
	if f.s3.enabled() {
		if f.list != "" {
			return nil, nil, errors.New("--remote and --s3 do not go together")
		}
		t, err := f.s3.open(context.Background(), s, log)
		if err != nil {
			return nil, nil, err
		}
		f.tier = t
		return t, t.Close, nil
	}
	if len(f.s3.follow) > 0 {
		return nil, nil, errors.New("--follow needs --s3")
	}
	if !f.enabled() {
		return s, func() {}, nil
	}
	gws, err := remote.ParseGateways(f.list)
	if err != nil {
		return nil, nil, err
	}
	retries := f.retries
	if retries == 0 {
		retries = -1 // remote.Options: 0 means the default
	}
	rs := remote.New(s, remote.Options{Gateways: gws, Timeout: f.timeout, Retries: retries, Logger: log})
	return rs, rs.Close, nil
}

// blockSource is where a command reading r finds blocks: the gateways of
// its --remote flags in front of r's store; without them, in the mount
// daemon, the mount's own source (its --remote gateways, if it has some),
// so that cat of a mounted repo reads what the mount reads.
func (a *app) blockSource(f *remoteFlags, r *repo) (unixfs.BlockViewer, func(), error) {
	if !f.enabled() && a.daemon != nil {
		return a.daemon.mount.Blocks(), func() {}, nil
	}
	return f.open(r.store, a.log)
}
