//go:build linux

// Package sockdiag runs one NETLINK_SOCK_DIAG dump: it sends the request
// and hands each answer's payload to the caller, who decodes its family's
// message (inet_diag_msg, unix_diag_msg).
package sockdiag

import (
	"encoding/binary"
	"errors"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Dump sends req on s and calls each with the payload of every answer until
// the kernel's NLMSG_DONE. An NLMSG_ERROR answer is returned as its errno.
func Dump(s *nl.NetlinkSocket, req *nl.NetlinkRequest, each func(payload []byte) error) error {
	if err := s.Send(req); err != nil {
		return err
	}
	for {
		msgs, _, err := s.Receive()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := -int32(binary.NativeEndian.Uint32(m.Data[:4])); e != 0 {
						return syscall.Errno(e)
					}
				}
				return errors.New("sock_diag: error answer")
			}
			if err := each(m.Data); err != nil {
				return err
			}
		}
	}
}
