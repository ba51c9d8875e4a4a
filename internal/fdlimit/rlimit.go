//go:build linux || darwin

package fdlimit

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

func raise(need uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("reading the open-file limit: %w", err)
	}
	if uint64(lim.Cur) >= need {
		return uint64(lim.Cur), nil
	}
	if uint64(lim.Max) < need {
		// Only a privileged process gets past its hard limit; the others
		// get as far as the hard limit below.
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: need, Max: need}) == nil {
			return need, nil
		}
	}
	want := lim
	want.Cur = min(need, uint64(lim.Max))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return uint64(lim.Cur), fmt.Errorf("raising the open-file limit to %d: %w", want.Cur, err)
	}
	return uint64(want.Cur), nil
}

func ceiling() (uint64, bool) {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}
