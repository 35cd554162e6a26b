//go:build linux

package handover

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// diagMsg builds an inet_diag_msg for 127.0.0.1:port with the given state,
// queues and inode, followed by an INET_DIAG_INFO attribute when info is
// not nil.
func diagMsg(state uint8, port uint16, rq, wq, inode uint32, info []byte) []byte {
	b := make([]byte, inetDiagMsgLen)
	b[0], b[1] = 2, state // AF_INET
	binary.BigEndian.PutUint16(b[4:6], port)
	copy(b[8:12], []byte{127, 0, 0, 1})
	binary.NativeEndian.PutUint32(b[56:60], rq)
	binary.NativeEndian.PutUint32(b[60:64], wq)
	binary.NativeEndian.PutUint32(b[68:72], inode)
	if info != nil {
		a := make([]byte, 4, 4+len(info)+3)
		binary.NativeEndian.PutUint16(a[0:2], uint16(4+len(info)))
		binary.NativeEndian.PutUint16(a[2:4], inetDiagInfo)
		a = append(a, info...)
		for len(a)%4 != 0 {
			a = append(a, 0)
		}
		b = append(b, a...)
	}
	return b
}

func tcpInfo(segsIn, segsOut, lastSent, lastRecv uint32) []byte {
	info := make([]byte, 232)
	binary.NativeEndian.PutUint32(info[tcpInfoDataSegsIn:], segsIn)
	binary.NativeEndian.PutUint32(info[tcpInfoDataSegsOut:], segsOut)
	binary.NativeEndian.PutUint32(info[tcpInfoLastDataSent:], lastSent)
	binary.NativeEndian.PutUint32(info[tcpInfoLastDataRecv:], lastRecv)
	return info
}

func TestParseDiagAndUnsettled(t *testing.T) {
	d, ok := parseDiag(diagMsg(tcpListen, 8080, 3, 511, 42, nil))
	require.True(t, ok)
	require.Equal(t, "127.0.0.1:8080", d.local.String())
	require.EqualValues(t, 3, d.rqueue)
	require.EqualValues(t, 511, d.wqueue)
	require.EqualValues(t, -1, d.dataSegsIn, "no tcp_info: unknown")

	// A tcp_info too short for tcpi_data_segs_in (an old kernel) is ignored.
	d, ok = parseDiag(diagMsg(tcpEstablished, 8080, 0, 0, 7, make([]byte, 100)))
	require.True(t, ok)
	require.EqualValues(t, -1, d.dataSegsIn)

	socks := []diagSocket{}
	for _, m := range [][]byte{
		diagMsg(tcpListen, 8080, 2, 128, 1, nil),                      // 2 queued: unsettled
		diagMsg(tcpListen, 8080, 5, 128, 99, nil),                     // not the original's listener
		diagMsg(tcpEstablished, 8080, 0, 0, 10, tcpInfo(3, 3, 4, 4)),  // idle keep-alive: settled
		diagMsg(tcpEstablished, 8080, 20, 0, 11, tcpInfo(1, 0, 9, 0)), // unread request
		diagMsg(tcpEstablished, 8080, 0, 0, 12, tcpInfo(0, 0, 5, 5)),  // peer sent nothing yet
		diagMsg(tcpEstablished, 8080, 0, 0, 13, tcpInfo(1, 0, 0, 0)),  // first request read, not answered (same jiffy)
		diagMsg(tcpEstablished, 8080, 0, 0, 16, tcpInfo(2, 1, 30, 2)), // a later request read, not answered
		diagMsg(tcpEstablished, 8080, 0, 0, 14, tcpInfo(0, 0, 5, 5)),  // not held by the tree
		diagMsg(tcpEstablished, 9090, 0, 0, 15, tcpInfo(0, 0, 5, 5)),  // another port
		diagMsg(tcpSynRecv, 8080, 0, 0, 0, nil),                       // a handshake under way on the port
		diagMsg(tcpSynRecv, 9090, 0, 0, 0, nil),                       // on another port
	} {
		d, ok := parseDiag(m)
		require.True(t, ok)
		socks = append(socks, d)
	}
	held := map[uint64]bool{10: true, 11: true, 12: true, 13: true, 15: true, 16: true}
	require.Equal(t, 7, unsettled(socks, map[uint64]bool{1: true}, map[uint16]bool{8080: true}, held))
}

func FuzzParseDiag(f *testing.F) {
	f.Add(diagMsg(tcpListen, 80, 1, 2, 3, nil))
	f.Add(diagMsg(tcpEstablished, 80, 0, 0, 3, tcpInfo(1, 1, 2, 3)))
	f.Add(diagMsg(tcpEstablished, 80, 0, 0, 3, make([]byte, 7)))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, ok := parseDiag(b)
		if !ok {
			return
		}
		if d.dataSegsIn < -1 {
			t.Fatalf("dataSegsIn %d", d.dataSegsIn)
		}
	})
}
