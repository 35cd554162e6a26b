// Package proc parses the Linux proc file system (proc(5)) so that clonebot can
// plan a live clone and refuse one that CRIU cannot carry out.
//
// The parsers (ParseStatus, ParseStat, ParseMaps, ParseNUMAMaps, ParseFDInfo,
// ParseChildren, ParseCgroup, ParseNetTCP, ClassifyFD) take an io.Reader or a
// string, are pure and build on every OS. FS reads a live /proc tree (or a fake
// one rooted anywhere, for tests) and exists only on Linux; elsewhere its
// methods return ErrUnsupported.
//
// Kernel: Linux 4.1 or newer (NSpid/NSpgid/NSsid in status). The
// task/TID/children files need CONFIG_PROC_CHILDREN, which CRIU needs anyway;
// numa_maps needs CONFIG_NUMA. The "Kthread:" line of status is only printed by
// recent kernels (6.18 has it); Status.Kthread is false where it is missing, so
// use Stat.IsKernelThread when that matters.
//
// Malformed input yields a *ParseError naming the file and line. Reading a
// process that does not exist (or exits while being read) yields an error that
// satisfies errors.Is(err, fs.ErrNotExist).
package proc
