package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/boxo/path"

	"github.com/ipfrs/ipfrs-mount/names"
)

// TypeIPNSRecord is the media type of a signed IPNS record.
const TypeIPNSRecord = "application/vnd.ipfs.ipns-record"

// ResolveName asks the gateways for name's IPNS record
// (GET /ipns/{name}?format=ipns-record), checks its signature against the
// name's key and its validity, keeps it in the local store, and returns
// the path it names. Of several gateways' valid records the one with the
// highest sequence number wins; a gateway that sends a bad record is
// passed over.
func (s *Store) ResolveName(ctx context.Context, name ipns.Name) (path.Path, error) {
	var best *ipns.Record
	var bestRaw []byte
	var bestSeq uint64
	var errs []error
	for _, gw := range s.o.Gateways {
		raw, err := s.fetchRecord(ctx, gw, name)
		if err == nil {
			var rec *ipns.Record
			if rec, _, err = names.Verify(name, raw); err == nil {
				seq, _ := rec.Sequence()
				if best == nil || seq > bestSeq {
					best, bestRaw, bestSeq = rec, raw, seq
				}
				continue
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", gw, err))
	}
	if best == nil {
		return nil, fmt.Errorf("/ipns/%s: no gateway has a valid record for the name (%w)", name, errors.Join(errs...))
	}
	// Keep it, so that the local gateway can serve it on; a newer one
	// kept already wins.
	if _, err := names.New(s.local).Put(ctx, name, bestRaw); err != nil {
		s.o.Logger.Info("remote: IPNS record not kept", "name", name.String(), "err", err)
	}
	return best.Value()
}

func (s *Store) fetchRecord(ctx context.Context, gw string, name ipns.Name) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gw+"/ipns/"+name.String()+"?format=ipns-record", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", TypeIPNSRecord)
	s.requests.Add(1)
	resp, err := s.o.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, statusError(resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(ipns.MaxRecordSize)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > ipns.MaxRecordSize {
		return nil, fmt.Errorf("IPNS record larger than %d bytes", ipns.MaxRecordSize)
	}
	return b, nil
}
