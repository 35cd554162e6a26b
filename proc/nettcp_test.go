package proc

import (
	"bytes"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseNetTCP(t *testing.T) {
	if !littleEndian() {
		t.Skip("skipping: the captures were taken on a little-endian host; /proc/net/tcp is in host byte order")
	}
	ap := netip.MustParseAddrPort
	tests := []struct {
		file string
		want []Socket
	}{{
		// A python process with a listener on 127.0.0.1 and a connection to
		// it carrying 100 unread bytes, plus a listener on 0.0.0.0:2024.
		file: "net_tcp.txt",
		want: []Socket{
			{Local: ap("127.0.0.1:59893"), Remote: ap("0.0.0.0:0"), State: TCPListen, Inode: 17119},
			{Local: ap("0.0.0.0:2024"), Remote: ap("0.0.0.0:0"), State: TCPListen, Inode: 584},
			{Local: ap("127.0.0.1:36994"), Remote: ap("127.0.0.1:42579"), State: TCPEstablished, Inode: 17125},
			{Local: ap("127.0.0.1:59893"), Remote: ap("127.0.0.1:49128"), State: TCPEstablished, RxQueue: 100, Inode: 17121},
			{Local: ap("127.0.0.1:49128"), Remote: ap("127.0.0.1:59893"), State: TCPEstablished, Inode: 17120},
		},
	}, {
		// A dual-stack listener on [::]:42579 with connections from ::1 and
		// from 127.0.0.1 (which appears IPv4-mapped).
		file: "net_tcp6.txt",
		want: []Socket{
			{Local: ap("[::]:42579"), Remote: ap("[::]:0"), State: TCPListen, Inode: 17122},
			{Local: ap("[::1]:42579"), Remote: ap("[::1]:44258"), State: TCPEstablished, Inode: 17124},
			{Local: ap("[::ffff:127.0.0.1]:42579"), Remote: ap("[::ffff:127.0.0.1]:36994"), State: TCPEstablished, Inode: 17126},
			{Local: ap("[::1]:44258"), Remote: ap("[::1]:42579"), State: TCPEstablished, Inode: 17123},
		},
	}, {
		file: "net_tcp_edge.txt", // hand-written: TIME_WAIT, non-root listener with backlog
		want: []Socket{
			{Local: ap("10.0.2.15:50000"), Remote: ap("8.8.8.8:53"), State: TCPTimeWait},
			{Local: ap("127.0.0.1:8080"), Remote: ap("0.0.0.0:0"), State: TCPListen, RxQueue: 0x80, UID: 1000, Inode: 98765},
		},
	}, {
		file: "net_tcp6_edge.txt", // hand-written: global address, v4-mapped peer, send queue
		want: []Socket{
			{Local: ap("[2001:db8::1]:443"), Remote: ap("[::ffff:127.0.0.1]:54321"), State: TCPEstablished, TxQueue: 16, UID: 1000, Inode: 4242},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseNetTCP(bytes.NewReader(readTestdata(t, tt.file)))
			if err != nil {
				t.Fatalf("ParseNetTCP: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v;\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestTCPStateString(t *testing.T) {
	tests := []struct {
		s    TCPState
		want string
	}{
		{TCPEstablished, "ESTABLISHED"}, {TCPSynSent, "SYN_SENT"}, {TCPSynRecv, "SYN_RECV"},
		{TCPFinWait1, "FIN_WAIT1"}, {TCPFinWait2, "FIN_WAIT2"}, {TCPTimeWait, "TIME_WAIT"},
		{TCPClose, "CLOSE"}, {TCPCloseWait, "CLOSE_WAIT"}, {TCPLastAck, "LAST_ACK"},
		{TCPListen, "LISTEN"}, {TCPClosing, "CLOSING"},
		{0, "TCPState(0x00)"}, {0x0c, "TCPState(0x0c)"}, {0xff, "TCPState(0xff)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("TCPState(%d).String(): got %q; want %q", uint8(tt.s), got, tt.want)
		}
	}
}

func TestParseNetTCPErrors(t *testing.T) {
	const hdr = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	tests := []struct{ name, line string }{
		{"few fields", "0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0"},
		{"bad address length", "0: 0100007:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1"},
		{"no port", "0: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1"},
		{"bad port", "0: 0100007F:1F90F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1"},
		{"bad hex", "0: 0100007G:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1"},
		{"mixed families", "0: 0100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1"},
		{"bad state", "0: 0100007F:1F90 00000000:0000 100 00000000:00000000 00:00000000 00000000 0 0 1"},
		{"bad queues", "0: 0100007F:1F90 00000000:0000 0A 00000000 00:00000000 00000000 0 0 1 x"},
		{"bad tx", "0: 0100007F:1F90 00000000:0000 0A 0000000X:00000000 00:00000000 00000000 0 0 1"},
		{"bad rx", "0: 0100007F:1F90 00000000:0000 0A 00000000:1000000000 00:00000000 00000000 0 0 1"},
		{"bad uid", "0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 u 0 1"},
		{"bad inode", "0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNetTCP(strings.NewReader(hdr + tt.line + "\n"))
			if err == nil {
				t.Fatalf("got %+v, nil error; want an error", got)
			}
			wantParseError(t, err, 2)
		})
	}
}
