package unixdiag

import (
	"encoding/binary"
	"testing"
)

// msg builds a unix_diag_msg with attributes, as the kernel sends it.
func msg(typ, state byte, ino uint32, attrs ...[]byte) []byte {
	b := make([]byte, msgLen)
	b[0], b[1], b[2] = 1, typ, state
	binary.NativeEndian.PutUint32(b[4:8], ino)
	binary.NativeEndian.PutUint32(b[8:12], 0xffffffff)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func attr(typ uint16, val []byte) []byte {
	l := 4 + len(val)
	b := make([]byte, 4, (l+3)&^3)
	binary.NativeEndian.PutUint16(b[0:2], uint16(l))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func vfs(ino, dev uint32) []byte { return append(u32(ino), u32(dev)...) }

func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want Socket
	}{
		{"journal stream, accepted side",
			msg(Stream, Established, 4242, attr(attrName, []byte("/run/systemd/journal/stdout")), attr(attrVFS, vfs(77, 0x19)), attr(attrPeer, u32(4243))),
			Socket{Inode: 4242, Type: Stream, State: Established, Name: "/run/systemd/journal/stdout", Peer: 4243, VFSInode: 77}},
		{"client end: no name",
			msg(Stream, Established, 4243, attr(attrPeer, u32(4242))),
			Socket{Inode: 4243, Type: Stream, State: Established, Peer: 4242}},
		{"listener",
			msg(Stream, Listen, 10, attr(attrName, []byte("/tmp/x.sock")), attr(attrVFS, vfs(5, 1))),
			Socket{Inode: 10, Type: Stream, State: Listen, Name: "/tmp/x.sock", VFSInode: 5}},
		{"abstract dgram",
			msg(Dgram, Close, 11, attr(attrName, []byte("\x00/org/example"))),
			Socket{Inode: 11, Type: Dgram, State: Close, Name: "@/org/example"}},
		{"unknown attribute skipped",
			msg(SeqPacket, Established, 12, attr(4, []byte{1, 2, 3, 4, 5, 6, 7, 8}), attr(attrPeer, u32(13))),
			Socket{Inode: 12, Type: SeqPacket, State: Established, Peer: 13}},
		{"odd name length, padded",
			msg(Stream, Listen, 14, attr(attrName, []byte("/a")), attr(attrPeer, u32(0))),
			Socket{Inode: 14, Type: Stream, State: Listen, Name: "/a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMessage(tc.in)
			if err != nil {
				t.Fatalf("ParseMessage: %v", err)
			}
			if got != tc.want {
				t.Errorf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

func TestParseMessageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"short", make([]byte, 8)},
		{"not AF_UNIX", append([]byte{2}, make([]byte, 15)...)},
		{"attribute longer than message", append(msg(Stream, Established, 1), 40, 0, 0, 0)},
		{"attribute shorter than its header", append(msg(Stream, Established, 1), 2, 0, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := ParseMessage(tc.in); err == nil {
				t.Errorf("got %+v, nil; want an error", s)
			}
		})
	}
}

func TestConnected(t *testing.T) {
	for _, tc := range []struct {
		s    Socket
		want bool
	}{
		{Socket{Type: Stream, Peer: 1}, true},
		{Socket{Type: SeqPacket, Peer: 1}, true},
		{Socket{Type: Dgram, Peer: 1}, false},
		{Socket{Type: Stream}, false},
	} {
		if got := tc.s.Connected(); got != tc.want {
			t.Errorf("%+v.Connected() = %v; want %v", tc.s, got, tc.want)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add(msg(Stream, Established, 4242, attr(attrName, []byte("/run/systemd/journal/stdout")), attr(attrVFS, vfs(77, 0x19)), attr(attrPeer, u32(4243))))
	f.Add(msg(Dgram, Close, 11, attr(attrName, []byte("\x00x"))))
	f.Add(msg(Stream, Listen, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseMessage(b)
		if err != nil {
			return
		}
		_ = s.TypeName()
		_ = s.Connected()
	})
}
