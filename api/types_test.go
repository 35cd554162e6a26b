package api

import (
	"encoding/json"
	"reflect"
	"testing"
)

var placementTests = []struct {
	in   string // JSON
	want Placement
	ok   bool
}{
	{`"same"`, PlaceSame, true},
	{`"spread"`, PlaceSpread, true},
	{`"1"`, "1", true},
	{`" 2 "`, "2", true},
	{`""`, "", true},
	{`1`, "1", true},
	{`0`, "0", true},
	{`-1`, "", false},
	{`"-1"`, "", false},
	{`"bogus"`, "", false},
	{`1.5`, "", false},
	{`"1.5"`, "", false},
	{`true`, "", false},
	{`{}`, "", false},
	{`99999999999999999999999`, "", false},
}

func TestPlacementUnmarshalJSON(t *testing.T) {
	for _, tt := range placementTests {
		t.Run(tt.in, func(t *testing.T) {
			var p Placement
			err := json.Unmarshal([]byte(tt.in), &p)
			if (err == nil) != tt.ok {
				t.Fatalf("err: got %v; want ok=%v", err, tt.ok)
			}
			if tt.ok && p != tt.want {
				t.Errorf("got %q; want %q", p, tt.want)
			}
		})
	}
}

func TestPlacementNode(t *testing.T) {
	for _, tt := range []struct {
		p    Placement
		n    int
		isOK bool
	}{
		{"3", 3, true},
		{PlaceSame, -1, false},
		{"", -1, false},
	} {
		n, ok := tt.p.Node()
		if n != tt.n || ok != tt.isOK {
			t.Errorf("Placement(%q).Node(): got %d, %v; want %d, %v", tt.p, n, ok, tt.n, tt.isOK)
		}
	}
}

var byteSizeTests = []struct {
	in   string
	want ByteSize
	ok   bool
}{
	{"512M", 512 << 20, true},
	{"1G", 1 << 30, true},
	{"1g", 1 << 30, true},
	{"64K", 64 << 10, true},
	{"2T", 2 << 40, true},
	{"65536", 65536, true},
	{"1KiB", 1 << 10, true},
	{"1MB", 1 << 20, true},
	{" 3G ", 3 << 30, true},
	{"0", 0, false},
	{"-1", 0, false},
	{"12Q", 0, false},
	{"", 0, false},
	{"G", 0, false},
	{"1.5G", 0, false},
	{"99999999T", 0, false},
}

func TestParseByteSize(t *testing.T) {
	for _, tt := range byteSizeTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseByteSize(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("err: got %v; want ok=%v", err, tt.ok)
			}
			if got != tt.want {
				t.Errorf("got %d; want %d", got, tt.want)
			}
		})
	}
}

func TestByteSizeJSON(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{`"512M"`, 512 << 20, true},
		{`1048576`, 1 << 20, true},
		{`"0"`, 0, false},
		{`-1`, 0, false},
		{`1.5`, 0, false},
		{`"12Q"`, 0, false},
	} {
		var b ByteSize
		err := json.Unmarshal([]byte(tt.in), &b)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err: got %v; want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if b != tt.want {
			t.Errorf("%s: got %d; want %d", tt.in, b, tt.want)
		}
	}
	out, err := json.Marshal(ByteSize(512 << 20))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "536870912"; got != want {
		t.Errorf("Marshal: got %s; want %s", got, want)
	}
}

func TestCloneRequestRoundTrip(t *testing.T) {
	for _, req := range []CloneRequest{
		{PID: 1234},
		{PID: 1234, NUMA: PlaceSpread, Name: "web-2", MemoryMax: 512 << 20, PidsMax: 64},
		{PID: 1, NUMA: "3"},
	} {
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var got CloneRequest
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		if got != req {
			t.Errorf("got %+v; want %+v (JSON %s)", got, req, b)
		}
	}
	// The wire also carries sizes as strings and nodes as numbers.
	var got CloneRequest
	if err := json.Unmarshal([]byte(`{"pid":7,"numa":2,"memory_max":"1G"}`), &got); err != nil {
		t.Fatal(err)
	}
	if want := (CloneRequest{PID: 7, NUMA: "2", MemoryMax: 1 << 30}); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}
}

func FuzzPlacementJSON(f *testing.F) {
	for _, tt := range placementTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Placement
		if json.Unmarshal(b, &p) != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Unmarshal(%q) accepted %q, which Validate rejects: %v", b, p, err)
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var again Placement
		if err := json.Unmarshal(out, &again); err != nil || again != p {
			t.Fatalf("round trip of %q: got %q, %v; want %q", p, again, err, p)
		}
	})
}

func FuzzParseByteSize(f *testing.F) {
	for _, tt := range byteSizeTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseByteSize(s)
		if err != nil {
			return
		}
		if v <= 0 || v > 1<<62 {
			t.Fatalf("ParseByteSize(%q): got %d; want 1..2^62", s, v)
		}
	})
}
