// Package fdlimit raises a process's limit on open files as far as it may
// go, for servers and load tools that hold one file per socket.
package fdlimit

// Raise asks for a limit on open files of at least need and returns the
// limit the process has afterwards, which may be lower: the soft limit is
// raised up to the hard one, and the hard one only by a process allowed to
// (CAP_SYS_RESOURCE). On systems without such a limit it returns need.
func Raise(need uint64) (uint64, error) { return raise(need) }

// Ceiling returns the most open files any process may have on this system,
// privileged or not (Linux: fs.nr_open), and whether it is known.
func Ceiling() (uint64, bool) { return ceiling() }
