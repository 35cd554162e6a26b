package proc

import "strings"

// ParseCmdline splits the contents of /proc/PID/cmdline into arguments:
// NUL-terminated strings (a process that rewrote its arguments may leave
// the last one unterminated, or separate words with spaces in the first).
func ParseCmdline(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}
