package worktree

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// stage holds a file's written bytes at their offsets until the next flush:
// in memory while small (most files written are), in a sparse file under
// the staging directory once they grow.
type stage interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Close() error // and remove
}

// memStageMax is the largest extent kept in memory.
const memStageMax = 256 << 10

type memStage struct{ b []byte }

func (m *memStage) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		clear(p)
		return len(p), nil // reads only cover written spans; beyond is zeros
	}
	n := copy(p, m.b[off:])
	clear(p[n:])
	return len(p), nil
}

func (m *memStage) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memStage) Truncate(size int64) error {
	if size < int64(len(m.b)) {
		m.b = m.b[:size]
	}
	return nil
}

func (m *memStage) Close() error { return nil }

type fileStage struct{ *os.File }

func (f fileStage) Close() error {
	err := f.File.Close()
	os.Remove(f.Name())
	return err
}

// stageFor returns a stage able to take a write ending at end, moving the
// staged bytes to a file when they outgrow memory.
func (t *Tree) stageFor(ino uint64, cur stage, end uint64) (stage, error) {
	m, inMem := cur.(*memStage)
	switch {
	case cur == nil && end <= memStageMax:
		return &memStage{}, nil
	case cur != nil && (!inMem || end <= memStageMax):
		return cur, nil
	}
	f, err := os.OpenFile(filepath.Join(t.stage, strconv.FormatUint(ino, 10)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	if inMem {
		if _, err := f.WriteAt(m.b, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("staging: %w", err)
		}
	}
	return fileStage{f}, nil
}
