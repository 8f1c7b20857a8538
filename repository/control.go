package repository

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"
)

// The control socket lets commands run while the mount daemon holds the
// repo (Badger allows one process): the client sends its arguments and
// working directory, the daemon runs the command against its open Repo and
// streams back stdout, stderr and the exit status as frames.
const SocketName = "ipfrs.sock"

// Frame kinds: [kind byte][length uint32 BE][payload].
const (
	frameStdout = 1
	frameStderr = 2
	frameExit   = 3 // payload: one byte, the exit status
)

// maxRequest bounds a request line; anything longer is garbage.
const maxRequest = 1 << 20

// Request is one command for the daemon: its arguments (the command name
// first) and the client's working directory.
type Request struct {
	Args []string `json:"args"`
	Cwd  string   `json:"cwd"`
}

// Handler runs a request against the daemon's repo, writing to stdout and
// stderr, and returns its exit status. ctx ends when the client hangs up or
// the daemon stops.
type Handler func(ctx context.Context, req Request, stdout, stderr io.Writer) int

// ErrExit is the exit status of a command the daemon ran, whose messages
// it already sent.
type ErrExit int

func (e ErrExit) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Forward runs req in the daemon serving the repo at dir. done is false
// when no daemon answers there, so the caller runs the command itself. A
// command that failed returns ErrExit.
func Forward(ctx context.Context, dir string, req Request, stdout, stderr io.Writer) (done bool, err error) {
	conn, err := net.DialTimeout("unix", filepath.Join(dir, SocketName), time.Second)
	if err != nil {
		return false, nil
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return true, fmt.Errorf("control socket: %w", err)
	}
	r := bufio.NewReader(conn)
	for {
		kind, payload, err := readFrame(r)
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			return true, fmt.Errorf("control socket: the mount daemon hung up: %w", err)
		}
		switch kind {
		case frameStdout:
			if _, err := stdout.Write(payload); err != nil {
				return true, err
			}
		case frameStderr:
			stderr.Write(payload)
		case frameExit:
			if len(payload) != 1 {
				return true, errors.New("control socket: bad exit frame")
			}
			if payload[0] == 0 {
				return true, nil
			}
			return true, ErrExit(payload[0])
		default:
			return true, fmt.Errorf("control socket: unknown frame %d", kind)
		}
	}
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > 64<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return hdr[0], b, err
}

// frameWriter writes one kind of frame; stdout and stderr share a conn.
type frameWriter struct {
	mu   *sync.Mutex
	w    io.Writer
	kind byte
}

func (f frameWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for rest := p; len(rest) > 0; {
		n := min(len(rest), 1<<20)
		var hdr [5]byte
		hdr[0] = f.kind
		binary.BigEndian.PutUint32(hdr[1:], uint32(n))
		if _, err := f.w.Write(hdr[:]); err != nil {
			return 0, err
		}
		if _, err := f.w.Write(rest[:n]); err != nil {
			return 0, err
		}
		rest = rest[n:]
	}
	return len(p), nil
}

// controlServer answers control-socket clients.
type controlServer struct {
	path   string
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// ServeControl answers clients of the repo's control socket with h until
// StopControl or Close. Close stops it before anything else, and waits for
// the commands it runs.
func (r *Repo) ServeControl(h Handler) error {
	r.controlMu.Lock()
	defer r.controlMu.Unlock()
	if r.control != nil {
		return errors.New("control socket: already served")
	}
	if r.isClosed() {
		return ErrClosed
	}
	path := filepath.Join(r.dir, SocketName)
	os.Remove(path) // left by a daemon that died; we hold the repo lock now
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &controlServer{path: path, ln: ln, cancel: cancel, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[conn] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, conn)
					s.mu.Unlock()
					conn.Close()
				}()
				serveConn(ctx, conn, h, r.log)
			}()
		}
	}()
	r.control = s
	return nil
}

// stopControl stops accepting control-socket clients, ends the commands
// in flight and waits for them.
func (r *Repo) stopControl() {
	r.controlMu.Lock()
	s := r.control
	r.control = nil
	r.controlMu.Unlock()
	if s == nil {
		return
	}
	s.ln.Close()
	os.Remove(s.path)
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(controlGrace):
	}
	// A command still running is blocked writing to a client that stopped
	// reading: wake it.
	s.mu.Lock()
	for c := range s.conns {
		c.SetDeadline(time.Now())
	}
	s.mu.Unlock()
	<-done
}

// controlGrace is how long a stopping daemon lets cancelled commands send
// their last output and exit status.
const controlGrace = 5 * time.Second

// exitPanic is the exit status of a command that panicked (EX_SOFTWARE).
const exitPanic = 70

func serveConn(ctx context.Context, conn net.Conn, h Handler, log *slog.Logger) {
	var mu sync.Mutex
	stdout := frameWriter{&mu, conn, frameStdout}
	stderr := frameWriter{&mu, conn, frameStderr}
	exit := func(code int) { frameWriter{&mu, conn, frameExit}.Write([]byte{byte(code)}) }
	conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // for the request line
	line, err := bufio.NewReaderSize(io.LimitReader(conn, maxRequest), 64<<10).ReadBytes('\n')
	conn.SetReadDeadline(time.Time{})
	var req Request
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err != nil || len(req.Args) == 0 {
		fmt.Fprintf(stderr, "ipfrs-mount: control socket: bad request\n")
		exit(2)
		return
	}
	// Stop the command if the client goes away.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hungUp := make(chan struct{})
	go func() {
		defer close(hungUp)
		io.Copy(io.Discard, conn)
		cancel()
	}()
	exit(runHandler(ctx, h, req, stdout, stderr, log))
	conn.Close()
	<-hungUp
}

// runHandler runs h; a panic is logged, reported to the client as an
// internal error with exitPanic, and ends only this command.
func runHandler(ctx context.Context, h Handler, req Request, stdout, stderr io.Writer, log *slog.Logger) (code int) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("control socket: command panicked", "args", req.Args, "panic", p, "stack", string(debug.Stack()))
			fmt.Fprintf(stderr, "ipfrs-mount: internal error (the daemon logged it): %v\n", p)
			code = exitPanic
		}
	}()
	return h(ctx, req, stdout, stderr)
}
