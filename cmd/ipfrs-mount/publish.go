package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/spf13/pflag"

	"github.com/ipfrs/ipfrs-mount/carfile"
)

func publishCommand() *command {
	var api string
	var pin bool
	return &command{
		name: "publish", args: "REF|CID[/PATH] --kubo-api URL [--pin]",
		help: "push a commit's tree (or any DAG) to a Kubo node through its RPC API (dag/import) and print the root",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&api, "kubo-api", "", "Kubo RPC API, e.g. http://127.0.0.1:5001 or /ip4/127.0.0.1/tcp/5001")
			fs.BoolVar(&pin, "pin", false, "pin the root on the Kubo node (recursively)")
		},
		run: func(ctx context.Context, a *app, fs *pflag.FlagSet) error {
			if fs.NArg() != 1 || api == "" {
				return errors.New("want exactly one REF or CID and --kubo-api URL")
			}
			base, err := kuboURL(api)
			if err != nil {
				return err
			}
			return a.publish(ctx, fs.Arg(0), base, pin)
		},
	}
}

// kuboURL accepts an http(s) URL or the multiaddr Kubo prints
// (/ip4/H/tcp/P, /ip6/H/tcp/P, /dns/H/tcp/P).
func kuboURL(s string) (string, error) {
	if p := strings.Split(strings.Trim(s, "/"), "/"); strings.HasPrefix(s, "/") {
		if len(p) != 4 || p[2] != "tcp" {
			return "", fmt.Errorf("--kubo-api %q: want /ip4/HOST/tcp/PORT or an http URL", s)
		}
		host := p[1]
		if p[0] == "ip6" {
			host = "[" + host + "]"
		}
		return "http://" + host + ":" + p[3], nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--kubo-api %q: want an http:// URL or a multiaddr", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// publishRoot resolves what to publish: a ref names a commit, whose tree
// goes out; a CID that is no commit (with an optional path) is a DAG.
func (r *repo) publishRoot(ctx context.Context, arg string) (cid.Cid, error) {
	h := r.History()
	if c, p, err := parseCIDPath(arg); err == nil {
		if p == "" {
			if cm, err := h.Get(ctx, c); err == nil {
				return cm.Tree, nil
			}
		}
		return r.resolve(ctx, arg)
	}
	id, err := h.Resolve(ctx, arg)
	if err != nil {
		return cid.Undef, err
	}
	cm, err := h.Get(ctx, id)
	if err != nil {
		return cid.Undef, err
	}
	return cm.Tree, nil
}

func (a *app) publish(ctx context.Context, arg, api string, pin bool) error {
	r, err := a.openRepoReadOnly()
	if err != nil {
		return err
	}
	defer r.close()
	root, err := r.publishRoot(ctx, arg)
	if err != nil {
		return err
	}
	// Stream the CAR into the multipart body as it is written.
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	prog := a.newProgress(-1, "publishing")
	go func() {
		part, err := mw.CreateFormFile("file", root.String()+".car")
		if err == nil {
			_, err = carfile.Export(ctx, r.store, []cid.Cid{root}, part, carfile.ExportOptions{Version: 1, Progress: prog.add})
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	u := fmt.Sprintf("%s/api/v0/dag/import?pin-roots=%t&stats=true", api, pin)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, pr)
	if err != nil {
		pr.Close()
		return err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	prog.done()
	if err != nil {
		pr.CloseWithError(err)
		return argErr(arg, fmt.Errorf("kubo: %w", err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var kerr struct{ Message string }
		if json.Unmarshal(b, &kerr) == nil && kerr.Message != "" {
			b = []byte(kerr.Message)
		}
		return fmt.Errorf("kubo: dag/import: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	// Kubo streams JSON objects: the roots it pinned, then stats.
	sawRoot := false
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	for sc.Scan() {
		var line struct {
			Root *struct {
				Cid struct {
					Slash string `json:"/"`
				}
				PinErrorMsg string
			}
			Stats *struct{ BlockCount, BlockBytesCount uint64 }
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("kubo: dag/import: unexpected answer %q", sc.Text())
		}
		switch {
		case line.Root != nil:
			if line.Root.PinErrorMsg != "" {
				return fmt.Errorf("kubo: pinning %s: %s", line.Root.Cid.Slash, line.Root.PinErrorMsg)
			}
			sawRoot = sawRoot || line.Root.Cid.Slash == root.String()
		case line.Stats != nil:
			fmt.Fprintf(a.stderr, "publish: Kubo imported %d blocks (%d bytes)\n", line.Stats.BlockCount, line.Stats.BlockBytesCount)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("kubo: dag/import: %w", err)
	}
	if e := resp.Trailer.Get("X-Stream-Error"); e != "" {
		return fmt.Errorf("kubo: dag/import: %s", e)
	}
	if pin && !sawRoot {
		return fmt.Errorf("kubo: dag/import did not report pinning %s", root)
	}
	fmt.Fprintln(a.stdout, root)
	return nil
}
