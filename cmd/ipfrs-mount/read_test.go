package main

import "testing"

func TestDisplayName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"model.safetensors", "model.safetensors"},
		{"with space", "with space"},
		{"ünïcode", "ünïcode"},
		{"a/b", `"a/b"`},
		{"a\x00b", `"a\x00b"`},
		{"..", `".."`},
		{".", `"."`},
		{"", `""`},
		{"line\nbreak", `"line\nbreak"`},
		{"esc\x1b[31m", `"esc\x1b[31m"`},
		{"\xff\xfe", `"\xff\xfe"`},
		{`"quoted"`, `"\"quoted\""`},
		{"tab\there", `"tab\there"`},
	}
	for _, tt := range tests {
		if got := displayName(tt.in); got != tt.want {
			t.Errorf("displayName(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
