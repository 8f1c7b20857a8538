package main

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
	"sync"
	"time"

	"github.com/ipfrs/ipfrs-mount/worktree"
)

// The control socket lets commands run while the mount daemon holds the
// repo (Badger allows one process): the client sends its arguments and
// working directory, the daemon runs the command against its open repo and
// streams back stdout, stderr and the exit status as frames.
const socketName = "ipfrs.sock"

// Frame kinds: [kind byte][length uint32 BE][payload].
const (
	frameStdout = 1
	frameStderr = 2
	frameExit   = 3 // payload: one byte, the exit status
)

// maxRequest bounds a request line; anything longer is garbage.
const maxRequest = 1 << 20

type controlRequest struct {
	Args []string `json:"args"`
	Cwd  string   `json:"cwd"`
}

// forward runs args in the daemon serving the repo at dir. done is false
// when no daemon answers there, so the caller runs the command itself.
func forward(ctx context.Context, dir string, args []string, e env) (done bool, err error) {
	conn, err := net.DialTimeout("unix", filepath.Join(dir, socketName), time.Second)
	if err != nil {
		return false, nil
	}
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	req, _ := json.Marshal(controlRequest{Args: args, Cwd: e.cwd})
	if _, err := conn.Write(append(req, '\n')); err != nil {
		return true, fmt.Errorf("control socket: %w", err)
	}
	r := bufio.NewReader(conn)
	for {
		kind, payload, err := readFrame(r)
		if err != nil {
			return true, fmt.Errorf("control socket: the mount daemon hung up: %w", err)
		}
		switch kind {
		case frameStdout:
			if _, err := e.stdout.Write(payload); err != nil {
				return true, err
			}
		case frameStderr:
			e.stderr.Write(payload)
		case frameExit:
			if len(payload) != 1 {
				return true, errors.New("control socket: bad exit frame")
			}
			if payload[0] == 0 {
				return true, nil
			}
			return true, exitError(payload[0])
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

// serveControl answers control-socket clients until ctx ends.
func serveControl(ctx context.Context, r *repo, tree *worktree.Tree, d *daemonState, log *slog.Logger) (stop func(), err error) {
	path := filepath.Join(r.path, socketName)
	os.Remove(path) // left by a daemon that died; we hold the repo lock now
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[conn] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, conn)
					mu.Unlock()
					conn.Close()
				}()
				defer func() {
					if p := recover(); p != nil {
						log.Error("control socket: command panicked", "panic", p)
					}
				}()
				serveConn(ctx, conn, r, tree, d, log)
			}()
		}
	}()
	return func() {
		cancel()
		ln.Close()
		os.Remove(path)
		mu.Lock()
		for c := range conns {
			c.Close() // clients still connected must not keep the daemon
		}
		mu.Unlock()
		wg.Wait()
	}, nil
}

func serveConn(ctx context.Context, conn net.Conn, r *repo, tree *worktree.Tree, d *daemonState, log *slog.Logger) {
	var mu sync.Mutex
	stdout := frameWriter{&mu, conn, frameStdout}
	stderr := frameWriter{&mu, conn, frameStderr}
	exit := func(code int) { frameWriter{&mu, conn, frameExit}.Write([]byte{byte(code)}) }
	conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // for the request line
	line, err := bufio.NewReaderSize(io.LimitReader(conn, maxRequest), 64<<10).ReadBytes('\n')
	conn.SetReadDeadline(time.Time{})
	var req controlRequest
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err != nil || len(req.Args) == 0 || req.Args[0] == "mount" {
		fmt.Fprintf(stderr, "ipfrs-mount: control socket: bad request\n")
		exit(2)
		return
	}
	// Stop the command if the client goes away.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, conn)
		cancel()
	}()
	err = run(ctx, req.Args, env{stdout: stdout, stderr: stderr, cwd: req.Cwd, shared: r, tree: tree, daemon: d})
	exit(report(stderr, err))
}
