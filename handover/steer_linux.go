//go:build linux

package handover

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// A graceful server can still fail a request that reaches it while it is
// told to drain: Go's http.Server.Shutdown, for one, closes without an
// answer a connection it accepted just before the signal whose request it
// reads just after. So before the drain signal no new connection may reach
// the original at all. Its listener must stay open (closing or shutting it
// down from outside makes accept fail, which many servers treat as fatal),
// so the choice is made where the kernel picks a listener of the
// SO_REUSEPORT group: a BPF_PROG_TYPE_SK_REUSEPORT program attached to the
// group selects, by the connection's hash, one of the replacement's sockets
// held in a REUSEPORT_SOCKARRAY map.
//
// The kernel keeps the program with the group and the map with the program,
// and the map does not keep sockets alive: a replacement socket that closes
// leaves the map, and when none is left the program's choice fails and the
// kernel falls back to its own hash over the group, the original included.

// sk_reuseport_md.hash (include/uapi/linux/bpf.h).
const reuseportMDHash = 32

// Steer makes every new connection to the SO_REUSEPORT group of the
// sockets to (listening TCP sockets bound to one address, held by the
// replacement) go to one of them. Undo with Unsteer.
func Steer(to []Socket) error {
	if len(to) == 0 {
		return errors.New("steer: no socket to steer to")
	}
	for _, s := range to {
		if !s.Listening || s.MPTCP() || s.Local != to[0].Local {
			return fmt.Errorf("steer: %s is not a TCP listener on %s", s, to[0].Local)
		}
	}
	arr, err := ebpf.NewMap(&ebpf.MapSpec{Name: "clonebot_steer", Type: ebpf.ReusePortSockArray,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(len(to))})
	if err != nil {
		return fmt.Errorf("create the socket map to steer %s: %w", to[0].Local, err)
	}
	defer arr.Close()
	var attachVia = -1
	defer func() {
		if attachVia >= 0 {
			unix.Close(attachVia)
		}
	}()
	for i, s := range to {
		fd, err := dupSocket(s)
		if err != nil {
			return err
		}
		err = arr.Put(uint32(i), uint64(fd))
		if attachVia < 0 {
			attachVia = fd
		} else {
			unix.Close(fd)
		}
		if err != nil {
			return fmt.Errorf("put %s in the socket map: %w", s, err)
		}
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:       "clonebot_steer",
		Type:       ebpf.SkReuseport,
		AttachType: ebpf.AttachSkReuseportSelect,
		License:    "Apache-2.0",
		Instructions: asm.Instructions{
			// key = ctx->hash % len(to), on the stack
			asm.LoadMem(asm.R2, asm.R1, reuseportMDHash, asm.Word),
			asm.Mod.Imm(asm.R2, int32(len(to))),
			asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
			// bpf_sk_select_reuseport(ctx, map, &key, 0); ctx is still in R1
			asm.LoadMapPtr(asm.R2, arr.FD()),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -4),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnSkSelectReuseport.Call(),
			// SK_PASS whatever the choice: a failed choice (the socket
			// closed) leaves the pick to the kernel's hash.
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("load the program that steers %s: %w", to[0].Local, err)
	}
	defer prog.Close()
	if err := unix.SetsockoptInt(attachVia, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, prog.FD()); err != nil {
		return fmt.Errorf("attach the program that steers %s to its SO_REUSEPORT group: %w", to[0].Local, err)
	}
	return nil
}

// Unsteer detaches whatever program steers the SO_REUSEPORT group of the
// first of via that is still open; the kernel's hash picks again. A group
// without a program is not an error.
func Unsteer(via []Socket) error {
	var errs []error
	for _, s := range via {
		fd, err := dupSocket(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
		unix.Close(fd)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		errs = append(errs, fmt.Errorf("detach the steering program of %s: %w", s, err))
	}
	return errors.Join(errs...)
}
