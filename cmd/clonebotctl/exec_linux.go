package main

import "syscall"

// sysExec replaces clonebotctl with argv0, so the terminal, signals and the
// exit status go straight to the command.
func sysExec(argv0 string, argv, env []string) error { return syscall.Exec(argv0, argv, env) }
