package fusefs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/ipfrs/ipfrs-mount/worktree"
)

func TestToErrno(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"wrapped not exist", fmt.Errorf("inode 3: %w", worktree.ErrNotExist), syscall.ENOENT},
		{"name too long", worktree.ErrNameTooLong, syscall.ENAMETOOLONG},
		{"errno passes through", fmt.Errorf("staging: %w", syscall.ENOSPC), syscall.ENOSPC},
		{"interrupted", context.Canceled, syscall.EINTR},
		{"unexpected", errors.New("disk on fire"), syscall.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A nil logger must not panic.
			if got := toErrno(nil, "test", tt.err); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
