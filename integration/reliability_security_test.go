package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// security: a mount is private unless --allow-other, and then the kernel
// enforces the modes (default_permissions); the control socket is the
// owner's alone. Another user is uid 65534 through setpriv.
func security(t *testing.T, cfg reliabilityConfig, c *tally) {
	requireProgram(t, "setpriv")
	for _, tt := range []struct {
		name       string
		allowOther bool
	}{{"private by default", false}, {"allow-other", true}} {
		t.Run(tt.name, func(t *testing.T) {
			repo := filepath.Join(t.TempDir(), "repo")
			var flags []string
			if tt.allowOther {
				flags = append(flags, "--allow-other")
			}
			d := suiteMount(t, c, repo, flags...)
			// Let uid 65534 reach the mount point, so that only the mount
			// itself can refuse it.
			for p := filepath.Dir(d.mnt); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
				if err := os.Chmod(p, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			writeFile(t, filepath.Join(d.mnt, "public.txt"), []byte("everyone\n"))
			writeFile(t, filepath.Join(d.mnt, "secret.txt"), []byte("owner only\n"))
			if err := os.Chmod(filepath.Join(d.mnt, "secret.txt"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d.mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			checks := []struct {
				args   []string
				denied bool
			}{
				{[]string{"cat", filepath.Join(d.mnt, "public.txt")}, !tt.allowOther},
				{[]string{"ls", d.mnt}, !tt.allowOther},
				{[]string{"cat", filepath.Join(d.mnt, "secret.txt")}, true},
				{[]string{"touch", filepath.Join(d.mnt, "intruder")}, true},
				{[]string{"rm", "-f", filepath.Join(d.mnt, "public.txt")}, true},
				{[]string{"chmod", "666", filepath.Join(d.mnt, "secret.txt")}, true},
				{[]string{"ls", filepath.Join(d.mnt, ".versions")}, !tt.allowOther},
			}
			for _, ck := range checks {
				c.runWith(1)
				c.fault(1)
				out, err := asNobody(ck.args...)
				switch {
				case ck.denied && err == nil:
					t.Errorf("uid 65534: %s succeeded: %s", strings.Join(ck.args, " "), out)
				case ck.denied && !strings.Contains(string(out), "ermission denied") && !strings.Contains(string(out), "not permitted"):
					t.Errorf("uid 65534: %s: want permission denied, got %s", strings.Join(ck.args, " "), out)
				case !ck.denied && err != nil:
					t.Errorf("uid 65534: %s: %v %s", strings.Join(ck.args, " "), err, out)
				}
			}
			sock := filepath.Join(repo, "ipfrs.sock")
			if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("control socket: %v %v", fi, err)
			}
			if err := os.Chmod(repo, 0o755); err != nil { // only the socket's mode stands in the way
				t.Fatal(err)
			}
			c.runWith(1)
			// Refused at the socket, the client falls back to opening the
			// repo itself, which its modes refuse too.
			if out, err := asNobody(binary, "--repo", repo, "stat"); err == nil || !strings.Contains(string(out), "permission denied") {
				t.Errorf("uid 65534 used the control socket: %s", out)
			}
			if err := d.stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
