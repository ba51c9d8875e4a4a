//go:build linux || darwin

package fdlimit

import (
	"syscall"
	"testing"
)

func limits(t *testing.T) syscall.Rlimit {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	return lim
}

// TestRaise lowers the soft limit, then asks for more: it is raised, up
// to the hard limit, and what Raise reports is what the process has.
func TestRaise(t *testing.T) {
	orig := limits(t)
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	if orig.Max < 512 {
		t.Skipf("hard open-file limit %d: too low to lower the soft one under it", orig.Max)
	}
	low := orig
	low.Cur = 256
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}

	got, err := Raise(300)
	if err != nil || got < 300 {
		t.Fatalf("Raise(300) = %d, %v; want at least 300", got, err)
	}
	if cur := limits(t).Cur; uint64(cur) != got {
		t.Fatalf("soft limit %d after Raise, which reported %d", cur, got)
	}

	// Past the hard limit: the process gets what it may have.
	if uint64(orig.Max) == ^uint64(0) {
		return // no hard limit to go past
	}
	got, err = Raise(uint64(orig.Max) + 1)
	now := limits(t)
	if uint64(now.Cur) != got {
		t.Fatalf("soft limit %d after Raise past the hard limit, which reported %d (err %v)", now.Cur, got, err)
	}
	if got < uint64(orig.Max) {
		t.Fatalf("Raise past the hard limit %d gave %d, %v; want at least the hard limit", orig.Max, got, err)
	}
}

// TestCeiling: no process may have more files than the ceiling, not even
// a privileged one.
func TestCeiling(t *testing.T) {
	c, ok := Ceiling()
	if !ok {
		t.Skip("the system does not say its ceiling (Linux's /proc/sys/fs/nr_open)")
	}
	orig := limits(t)
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	if got, _ := Raise(c + 1); got > c {
		t.Fatalf("Raise past the ceiling %d gave %d", c, got)
	}
}
