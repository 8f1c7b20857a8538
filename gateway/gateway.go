// Package gateway serves a block store over HTTP as an IPFS Trustless
// Gateway (https://specs.ipfs.tech/http-gateways/trustless-gateway/): raw
// blocks (application/vnd.ipld.raw) and CARv1 streams
// (application/vnd.ipld.car, dag-scope all|entity|block, entity-bytes, dups
// y|n, depth-first order) by CID, with paths for CARs. It serves what the
// store holds and nothing else: a missing root is 404.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	carstorage "github.com/ipld/go-car/v2/storage"

	"github.com/ipfrs/ipfrs-mount/names"
	"github.com/ipfrs/ipfrs-mount/store"
	"github.com/ipfrs/ipfrs-mount/unixfs"
)

// Media types of the verifiable responses.
const (
	TypeRaw        = "application/vnd.ipld.raw"
	TypeCAR        = "application/vnd.ipld.car"
	TypeIPNSRecord = "application/vnd.ipfs.ipns-record"
)

// cacheImmutable is what every response by CID may be cached for: content
// behind a CID never changes.
const cacheImmutable = "public, max-age=29030400, immutable"

// Options configures a Handler.
type Options struct {
	Logger *slog.Logger
	// Records holds the IPNS records the gateway serves under /ipns/
	// (nil: none).
	Records RecordSource
}

// RecordSource returns the IPNS record kept for a name
// (names.ErrNoRecord when there is none).
type RecordSource interface {
	Get(ctx context.Context, name ipns.Name) ([]byte, error)
}

// Handler answers /ipfs/ requests from a block store, and /ipns/ ones
// from the IPNS records it holds.
type Handler struct {
	bs      unixfs.BlockViewer
	records RecordSource
	log     *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// New serves the blocks bs holds.
func New(bs unixfs.BlockViewer, o Options) *Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{bs: bs, records: o.Records, log: o.Logger}
}

// httpError is an answer other than 200, with the reason for the body.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func fail(code int, format string, a ...any) *httpError {
	return &httpError{code, fmt.Sprintf(format, a...)}
}

// request is a parsed /ipfs/ request.
type request struct {
	root     cid.Cid
	path     []string // segments under root
	car      bool
	filename string // ?filename=, for Content-Disposition
	// CAR parameters.
	dups     bool
	scope    string // all, entity, block
	rangeArg string // entity-bytes, "" if none
	// ttl is how long the answer may be cached when it came through a
	// mutable /ipns/ name; 0 for /ipfs/ (immutable).
	ttl time.Duration
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/ipns/") {
		if herr := h.serveIPNS(w, r); herr != nil {
			h.fail(w, r, herr)
		}
		return
	}
	h.serveIPFS(w, r, 0)
}

// serveIPFS answers an /ipfs/ request; ttl > 0 when it resolved from an
// /ipns/ name.
func (h *Handler) serveIPFS(w http.ResponseWriter, r *http.Request, ttl time.Duration) {
	req, herr := parseRequest(r)
	if req != nil {
		req.ttl = ttl
	}
	if herr == nil && strings.Contains(r.Header.Get("Cache-Control"), "only-if-cached") {
		if err := h.bs.View(r.Context(), req.root, func([]byte) error { return nil }); err != nil {
			herr = fail(http.StatusPreconditionFailed, "%s is not in this gateway's store", req.root)
		}
	}
	if herr == nil {
		if req.car {
			herr = h.serveCAR(w, r, req)
		} else {
			herr = h.serveRaw(w, r, req)
		}
	}
	if herr != nil {
		h.fail(w, r, herr)
	}
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, herr *httpError) {
	if herr.code >= 500 {
		h.log.Error("gateway", "path", r.URL.Path, "err", herr.msg)
	}
	w.Header().Set("Cache-Control", "no-cache")
	http.Error(w, herr.msg, herr.code)
}

// serveIPNS answers /ipns/{name}: the signed record itself
// (?format=ipns-record or Accept: application/vnd.ipfs.ipns-record), or
// what the record names, served as /ipfs/ is. Only records this gateway
// holds are served; each is checked (signature, validity) first.
func (h *Handler) serveIPNS(w http.ResponseWriter, r *http.Request) *httpError {
	segs := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/ipns/"), "/"), "/")
	name, err := ipns.NameFromString(segs[0])
	if err != nil && strings.Contains(segs[0], ".") {
		return fail(http.StatusNotImplemented, "/ipns/%s: DNSLink names are not resolved by this gateway", segs[0])
	}
	if err != nil {
		return fail(http.StatusBadRequest, "%q is not an IPNS name (a libp2p key as a CID or peer ID): %v", segs[0], err)
	}
	var raw []byte
	if h.records == nil {
		err = names.ErrNoRecord
	} else {
		raw, err = h.records.Get(r.Context(), name)
	}
	if errors.Is(err, names.ErrNoRecord) {
		return fail(http.StatusNotFound, "/ipns/%s: this gateway holds no record for the name", name)
	} else if err != nil {
		return fail(http.StatusInternalServerError, "%v", err)
	}
	rec, value, err := names.Verify(name, raw)
	if err != nil {
		return fail(http.StatusNotFound, "the record held is not valid: %v", err)
	}
	ttl, err := rec.TTL()
	if err != nil || ttl <= 0 {
		ttl = time.Minute
	}
	q := r.URL.Query()
	t, _, _ := mime.ParseMediaType(r.Header.Get("Accept"))
	if f := q.Get("format"); f == "ipns-record" || f == "" && t == TypeIPNSRecord {
		if len(segs) > 1 {
			return fail(http.StatusBadRequest, "an IPNS record is requested by name alone, without a path")
		}
		hd := w.Header()
		hd.Set("Content-Type", TypeIPNSRecord)
		hd.Set("Content-Disposition", attachment(q.Get("filename"), name.String()+".ipns-record"))
		hd.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(ttl.Seconds())))
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Vary", "Accept")
		hd.Set("X-Ipfs-Path", r.URL.Path)
		hd.Set("Content-Length", strconv.Itoa(len(raw)))
		if r.Method == http.MethodHead {
			return nil
		}
		w.Write(raw)
		return nil
	}
	if value.Namespace() != path.IPFSNamespace {
		return fail(http.StatusNotImplemented, "/ipns/%s names %s: only /ipfs/ values are followed", name, value)
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = value.String() + "/" + strings.Join(segs[1:], "/")
	r2.URL.RawPath = ""
	h.serveIPFS(w, r2, ttl)
	return nil
}

// parseRequest reads the path, the format and the CAR parameters.
func parseRequest(r *http.Request) (*request, *httpError) {
	p := r.URL.Path
	if !strings.HasPrefix(p, "/ipfs/") {
		return nil, fail(http.StatusNotFound, "not found: only /ipfs/{cid} and /ipns/{name} are served")
	}
	segs := strings.Split(strings.Trim(strings.TrimPrefix(p, "/ipfs/"), "/"), "/")
	root, err := cid.Decode(segs[0])
	if err != nil {
		return nil, fail(http.StatusBadRequest, "invalid CID %q: %v", segs[0], err)
	}
	req := &request{root: root, scope: "all", filename: r.URL.Query().Get("filename")}
	for _, s := range segs[1:] {
		if s == "" || s == "." || s == ".." {
			return nil, fail(http.StatusBadRequest, "invalid path %q", p)
		}
		req.path = append(req.path, s)
	}
	q := r.URL.Query()
	var params map[string]string
	switch f := q.Get("format"); f {
	case "raw":
	case "car":
		req.car = true
		params = map[string]string{}
		// The Accept header may still carry the CAR parameters.
		if t, ps, ok := bestAccept(r.Header.Get("Accept")); ok && t == TypeCAR {
			params = ps
		}
	case "":
		t, ps, ok := bestAccept(r.Header.Get("Accept"))
		switch {
		case r.Header.Get("Accept") == "":
			return nil, fail(http.StatusBadRequest, "this is a trustless gateway: ask for %s or %s (Accept header or ?format=raw|car)", TypeRaw, TypeCAR)
		case !ok:
			return nil, fail(http.StatusNotAcceptable, "only %s and %s are served", TypeRaw, TypeCAR)
		}
		req.car, params = t == TypeCAR, ps
	default:
		return nil, fail(http.StatusNotAcceptable, "format %q is not served: only raw and car", f)
	}
	if !req.car {
		if len(req.path) > 0 {
			return nil, fail(http.StatusBadRequest, "a raw block is requested by CID alone, without a path")
		}
		return req, nil
	}
	for _, k := range []string{"version", "order", "dups"} {
		if v := q.Get("car-" + k); v != "" {
			params[k] = v // the query wins over Accept
		}
	}
	if v := params["version"]; v != "" && v != "1" {
		return nil, fail(http.StatusNotAcceptable, "CAR version %q is not served: only 1", v)
	}
	if v := params["order"]; v != "" && v != "dfs" && v != "unk" {
		return nil, fail(http.StatusNotAcceptable, "CAR order %q is not served: only dfs", v)
	}
	switch params["dups"] {
	case "y":
		req.dups = true
	case "", "n":
	default:
		return nil, fail(http.StatusBadRequest, "bad CAR dups %q", params["dups"])
	}
	if s := q.Get("dag-scope"); s != "" {
		if s != "all" && s != "entity" && s != "block" {
			return nil, fail(http.StatusBadRequest, "bad dag-scope %q: want all, entity or block", s)
		}
		req.scope = s
	}
	if b := q.Get("entity-bytes"); b != "" {
		if _, _, err := parseRange(b); err != nil {
			return nil, fail(http.StatusBadRequest, "bad entity-bytes %q: %v", b, err)
		}
		req.scope, req.rangeArg = "entity", b
	}
	return req, nil
}

// bestAccept picks the most preferred of the two verifiable types from an
// Accept header, with its parameters.
func bestAccept(accept string) (string, map[string]string, bool) {
	type choice struct {
		t      string
		params map[string]string
		q      float64
		i      int
	}
	var cs []choice
	for i, part := range strings.Split(accept, ",") {
		t, ps, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || (t != TypeRaw && t != TypeCAR) {
			continue
		}
		q := 1.0
		if v, ok := ps["q"]; ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		if q > 0 {
			cs = append(cs, choice{t, ps, q, i})
		}
	}
	if len(cs) == 0 {
		return "", nil, false
	}
	sort.SliceStable(cs, func(a, b int) bool { return cs[a].q > cs[b].q })
	return cs[0].t, cs[0].params, true
}

// commonHeaders are sent with every successful answer.
func commonHeaders(w http.ResponseWriter, r *http.Request, req *request, roots []cid.Cid, etag string) {
	hd := w.Header()
	hd.Set("Cache-Control", cacheImmutable)
	if req.ttl > 0 {
		hd.Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(req.ttl.Seconds())))
	}
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Vary", "Accept")
	hd.Set("Etag", etag)
	hd.Set("X-Ipfs-Path", r.URL.Path)
	s := make([]string, len(roots))
	for i, c := range roots {
		s[i] = c.String()
	}
	hd.Set("X-Ipfs-Roots", strings.Join(s, ","))
}

// notModified answers 304 when the client holds etag already.
func notModified(w http.ResponseWriter, r *http.Request, etag string) bool {
	for _, t := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		if t = strings.TrimSpace(t); t == etag || t == "*" {
			w.WriteHeader(http.StatusNotModified)
			return true
		}
	}
	return false
}

func (h *Handler) serveRaw(w http.ResponseWriter, r *http.Request, req *request) *httpError {
	var b []byte
	err := h.bs.View(r.Context(), req.root, func(data []byte) error {
		if err := unixfs.CheckHash(req.root, data); err != nil {
			return err
		}
		b = append(make([]byte, 0, len(data)), data...)
		return nil
	})
	if herr := storeErr(req.root, err); herr != nil {
		return herr
	}
	etag := `"` + req.root.String() + `.raw"`
	commonHeaders(w, r, req, []cid.Cid{req.root}, etag)
	if notModified(w, r, etag) {
		return nil
	}
	hd := w.Header()
	hd.Set("Content-Type", TypeRaw)
	hd.Set("Content-Disposition", attachment(req.filename, req.root.String()+".bin"))
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodHead {
		return nil
	}
	w.Write(b)
	return nil
}

// storeErr turns a store error into an answer: a missing block is 404,
// anything else a server error.
func storeErr(c cid.Cid, err error) *httpError {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return fail(http.StatusNotFound, "%s: not in this gateway's store", c)
	case errors.Is(err, unixfs.ErrNoEntry):
		return fail(http.StatusNotFound, "%v", err)
	case errors.Is(err, unixfs.ErrNotDir):
		return fail(http.StatusBadRequest, "%v", err)
	case errors.Is(err, context.Canceled):
		return fail(499, "client went away") // nginx's code; the client no longer listens
	default:
		return fail(http.StatusInternalServerError, "%v", err)
	}
}

// recorder is a BlockViewer that notes which blocks were read, in order:
// the blocks a path walk needs, which a CAR must carry to verify it.
type recorder struct {
	bs   unixfs.BlockViewer
	seen []cid.Cid
}

func (r *recorder) View(ctx context.Context, c cid.Cid, fn func([]byte) error) error {
	r.seen = append(r.seen, c)
	return r.bs.View(ctx, c, fn)
}

func (h *Handler) serveCAR(w http.ResponseWriter, r *http.Request, req *request) *httpError {
	ctx := r.Context()
	// Walk the path first: its blocks lead the CAR, its CIDs are the roots.
	rec := &recorder{bs: h.bs}
	cur, roots, err := resolvePath(ctx, rec, req.root, req.path)
	if herr := storeErr(cur, err); herr != nil {
		return herr
	}
	// The terminal block must be here before the answer is 200; a file's
	// size resolves entity-bytes.
	var size uint64
	var isFile bool
	err = h.bs.View(ctx, cur, func(b []byte) error {
		switch cur.Prefix().Codec {
		case cid.Raw:
			size, isFile = uint64(len(b)), true
		case cid.DagProtobuf:
			if d, err := unixfs.Decode(b); err == nil && d.Kind == unixfs.KindFile {
				size, isFile = d.Size, true
			}
		}
		return nil
	})
	if herr := storeErr(cur, err); herr != nil {
		return herr
	}
	var rng *byteRange
	if req.rangeArg != "" && isFile {
		from, to, _ := parseRange(req.rangeArg)
		var inside bool
		rng, inside = resolveRange(from, to, size)
		if !inside {
			return fail(http.StatusBadRequest, "entity-bytes %s is outside the file's %d bytes", req.rangeArg, size)
		}
	}
	sum := fnv.New64a()
	fmt.Fprintf(sum, "%s|%s|%s|%v", strings.Join(req.path, "/"), req.scope, req.rangeArg, req.dups)
	etag := fmt.Sprintf(`W/"%s.car.%x"`, req.root, sum.Sum64())
	commonHeaders(w, r, req, roots, etag)
	if notModified(w, r, etag) {
		return nil
	}
	dups := "n"
	if req.dups {
		dups = "y"
	}
	hd := w.Header()
	hd.Set("Content-Type", TypeCAR+"; version=1; order=dfs; dups="+dups)
	hd.Set("Content-Disposition", attachment(req.filename, req.root.String()+".car"))
	// A CAR is generated per request: byte ranges of it mean nothing
	// (the trustless gateway spec asks for this header).
	hd.Set("Accept-Ranges", "none")
	if r.Method == http.MethodHead {
		return nil
	}
	car, err := carstorage.NewWritable(w, []cid.Cid{cur}, carv2.WriteAsCarV1(true), carv2.AllowDuplicatePuts(req.dups))
	if err != nil {
		return fail(http.StatusInternalServerError, "%v", err)
	}
	wk := &walker{ctx: ctx, bs: h.bs, car: car, dups: req.dups, seen: map[string]struct{}{}}
	for _, c := range rec.seen {
		if err := wk.put(c, nil); err != nil {
			return h.abort(r, err)
		}
	}
	switch req.scope {
	case "block":
		err = wk.put(cur, nil)
	case "entity":
		err = wk.entity(cur, rng, 0)
	default:
		err = wk.all(cur, 0)
	}
	if err != nil {
		return h.abort(r, err)
	}
	return nil
}

// abort ends a CAR stream that is already 200: the connection is cut, so
// the client sees an incomplete response, as the spec asks.
func (h *Handler) abort(r *http.Request, err error) *httpError {
	if r.Context().Err() == nil {
		h.log.Warn("gateway: CAR stream cut short", "path", r.URL.Path, "err", err)
	}
	panic(http.ErrAbortHandler)
}

// attachment is a Content-Disposition naming the download: the client's
// ?filename= if it gave one, else def. A name that is not plain ASCII
// goes in filename* (RFC 6266), with an ASCII stand-in in filename.
func attachment(filename, def string) string {
	if filename == "" {
		filename = def
	}
	ascii, plain := asciiName(filename)
	if plain {
		return `attachment; filename="` + ascii + `"`
	}
	return `attachment; filename="` + ascii + `"; filename*=UTF-8''` + url.PathEscape(filename)
}

// asciiName replaces each rune of name that is not printable ASCII, and
// the quote and backslash that would end or escape the quoted string, by
// '_'; plain tells whether nothing needed replacing.
func asciiName(name string) (string, bool) {
	plain := true
	b := make([]byte, 0, len(name))
	for _, r := range name {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			r, plain = '_', false
		}
		b = append(b, byte(r))
	}
	return string(b), plain
}
