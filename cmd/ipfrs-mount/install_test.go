package main

import (
	"slices"
	"testing"
)

func TestHelperArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
		fake bool
		err  bool
	}{
		{"plain", []string{"/r", "/m"}, []string{"--repo", "/r", "mount", "/m", "--daemon"}, false, false},
		{"options translated, generic ones ignored",
			[]string{"/r", "/m", "-o", "rw,allow_other,noatime,_netdev,x-systemd.automount,readahead_kb=4096,metrics=127.0.0.1:9464,log_level=debug,compress,autocommit=10m"},
			[]string{"--repo", "/r", "mount", "/m", "--daemon", "--allow-other", "--readahead-kb", "4096",
				"--metrics", "127.0.0.1:9464", "--log-level", "debug", "--compress", "--autocommit", "10m"}, false, false},
		{"flags before and joined -o", []string{"-n", "/r", "/m", "-oallow_other"},
			[]string{"--repo", "/r", "mount", "/m", "--daemon", "--allow-other"}, false, false},
		{"type passed by mount", []string{"/r", "/m", "-t", "fuse.ipfrs", "-o", "defaults"},
			[]string{"--repo", "/r", "mount", "/m", "--daemon"}, false, false},
		{"fake", []string{"-f", "/r", "/m"}, []string{"--repo", "/r", "mount", "/m", "--daemon"}, true, false},
		{"sloppy keeps going", []string{"-s", "/r", "/m", "-o", "what=ever"}, []string{"--repo", "/r", "mount", "/m", "--daemon"}, false, false},
		{"unknown option", []string{"/r", "/m", "-o", "what=ever"}, nil, false, true},
		{"read-only refused", []string{"/r", "/m", "-o", "ro"}, nil, false, true},
		{"value missing", []string{"/r", "/m", "-o", "metrics"}, nil, false, true},
		{"one path", []string{"/r"}, nil, false, true},
		{"-o at the end", []string{"/r", "/m", "-o"}, nil, false, true},
		{"namespaces", []string{"-N", "1", "/r", "/m"}, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, fake, err := helperArgs(tt.args)
			if (err != nil) != tt.err || fake != tt.fake || !slices.Equal(got, tt.want) {
				t.Fatalf("helperArgs(%q) = %q, %v, %v; want %q, %v, error %v", tt.args, got, fake, err, tt.want, tt.fake, tt.err)
			}
		})
	}
}

func TestIsMountHelper(t *testing.T) {
	for argv0, want := range map[string]bool{
		"/sbin/mount.fuse.ipfrs": true, "mount.ipfrs": true, "/usr/local/bin/ipfrs-mount": false, "mount.fuse": false,
	} {
		if got := isMountHelper(argv0); got != want {
			t.Errorf("isMountHelper(%q) = %v", argv0, got)
		}
	}
}
