package store

import "sync/atomic"

// counters count the store's traffic since it was opened, for metrics.
type counters struct {
	gets, getBytes       atomic.Int64
	puts, putBytes       atomic.Int64
	dupPuts, dupPutBytes atomic.Int64
}

// Counters is a snapshot of a store's traffic since it was opened.
type Counters struct {
	Gets     int64 // blocks read (View, Get, Size)
	GetBytes int64 // their bytes, uncompressed
	Puts     int64 // blocks written
	PutBytes int64 // their bytes, uncompressed
	// DupPuts are puts skipped because the block was stored already:
	// DupPutBytes is what deduplication saved.
	DupPuts     int64
	DupPutBytes int64
}

// Counters returns the store's traffic since it was opened.
func (s *Badger) Counters() Counters {
	c := &s.counters
	return Counters{
		Gets: c.gets.Load(), GetBytes: c.getBytes.Load(),
		Puts: c.puts.Load(), PutBytes: c.putBytes.Load(),
		DupPuts: c.dupPuts.Load(), DupPutBytes: c.dupPutBytes.Load(),
	}
}
