package h2wire

import (
	"bytes"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestHeaderWriterLeavesRequestIDsOutOfTheTable: across blocks, a repeated
// field is sent indexed, while a request ID, new each time, is sent as a
// never-indexed literal and so never enters the peer's dynamic table; every
// block decodes back to what was written.
func TestHeaderWriterLeavesRequestIDsOutOfTheTable(t *testing.T) {
	var hw HeaderWriter
	hw.Init()
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, &wire)
	dec := hpack.NewDecoder(4096, nil)
	for i, id := range []string{"2f1c0d3e-0000-4000-8000-000000000001", "2f1c0d3e-0000-4000-8000-000000000002"} {
		fields := [][2]string{{":authority", "backend"}, {"user-agent", "test/1"}, {"x-request-id", id}, {"traceparent", "00-" + id[:32] + "-00f067aa0ba902b7-01"}}
		if err := hw.Write(fr, uint32(2*i+1), true, 16384, func(enc func(k, v string)) {
			for _, f := range fields {
				enc(f[0], f[1])
			}
		}); err != nil {
			t.Fatal(err)
		}
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		got, err := dec.DecodeFull(f.(*http2.HeadersFrame).HeaderBlockFragment())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(fields) {
			t.Fatalf("block %d: decoded %d fields, want %d", i, len(got), len(fields))
		}
		for j, hf := range got {
			if hf.Name != fields[j][0] || hf.Value != fields[j][1] {
				t.Errorf("block %d field %d: %s: %s, want %s: %s", i, j, hf.Name, hf.Value, fields[j][0], fields[j][1])
			}
			if want := uniquePerRequest(hf.Name); hf.Sensitive != want {
				t.Errorf("block %d: %s never-indexed = %v, want %v", i, hf.Name, hf.Sensitive, want)
			}
		}
	}
	// The table holds :authority and user-agent once each (32 bytes of
	// overhead plus name and value per entry), nothing of the IDs.
	want := uint32(32+len(":authority")+len("backend")) + uint32(32+len("user-agent")+len("test/1"))
	if n := dynamicTableBytes(t, dec); n != want {
		t.Errorf("peer's dynamic table holds %d bytes, want %d (the two repeated fields only)", n, want)
	}
}

// dynamicTableBytes sums the sizes of the entries in dec's dynamic table,
// found by decoding indexed fields 62 (its newest), 63, ... until one fails.
func dynamicTableBytes(t *testing.T, dec *hpack.Decoder) uint32 {
	t.Helper()
	var n uint32
	for idx := 62; idx < 62+16; idx++ {
		fs, err := dec.DecodeFull([]byte{0x80 | byte(idx)})
		if err != nil {
			break
		}
		n += fs[0].Size()
	}
	return n
}

// TestWriteHeaderBlockSplits: a block longer than the peer's frame size goes
// out as HEADERS and CONTINUATION frames that a Framer reads back whole.
func TestWriteHeaderBlockSplits(t *testing.T) {
	for _, size := range []int{0, 10, 100, 101, 350} {
		var buf bytes.Buffer
		fr := http2.NewFramer(&buf, &buf)
		block := bytes.Repeat([]byte{0x80}, size) // indexed field 0: never decoded here
		if err := WriteHeaderBlock(fr, 3, true, 100, block); err != nil {
			t.Fatal(err)
		}
		var got []byte
		frames := 0
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				break
			}
			frames++
			switch f := f.(type) {
			case *http2.HeadersFrame:
				if frames != 1 || !f.StreamEnded() || f.StreamID != 3 {
					t.Fatalf("size %d: HEADERS as frame %d, END_STREAM %v, stream %d", size, frames, f.StreamEnded(), f.StreamID)
				}
				got = append(got, f.HeaderBlockFragment()...)
				if f.HeadersEnded() != (size <= 100) {
					t.Fatalf("size %d: END_HEADERS on HEADERS = %v", size, f.HeadersEnded())
				}
			case *http2.ContinuationFrame:
				got = append(got, f.HeaderBlockFragment()...)
			}
		}
		want := max(1, (size+99)/100)
		if frames != want || !bytes.Equal(got, block) {
			t.Errorf("size %d: %d frames carrying %d bytes, want %d frames carrying the block", size, frames, len(got), want)
		}
	}
}

func TestNames(t *testing.T) {
	for _, k := range []string{"Content-Type", "Grpc-Status", "X-Custom-Thing"} {
		l := Lower(k)
		if l != http.CanonicalHeaderKey(l) && Lower(http.CanonicalHeaderKey(l)) != l {
			t.Errorf("Lower(%q) = %q does not round-trip", k, l)
		}
		if c, ok := Canonical(l); ok && c != k {
			t.Errorf("Canonical(%q) = %q, want %q", l, c, k)
		}
	}
	if _, ok := Canonical("x-custom-thing"); ok {
		t.Error("Canonical claims an uncommon name")
	}
	if c, ok := Canonical("grpc-status"); !ok || c != "Grpc-Status" {
		t.Errorf("Canonical(grpc-status) = %q, %v", c, ok)
	}
}

// TestInbox: bytes come out in order, padding and read bytes are credited
// together once they reach the threshold, and not once the stream has ended.
func TestInbox(t *testing.T) {
	var b Inbox
	b.Add([]byte("hello"), 3)
	p := make([]byte, 2)
	if n, credit := b.Take(p, 6, true); n != 2 || string(p) != "he" || credit != 0 {
		t.Fatalf("first Take = %d %q credit %d, want 2 \"he\" 0", n, p[:n], credit)
	}
	p = make([]byte, 10)
	if n, credit := b.Take(p, 6, true); n != 3 || string(p[:n]) != "llo" || credit != 8 {
		t.Fatalf("second Take = %d %q credit %d, want 3 \"llo\" 8 (5 read + 3 padding)", n, p[:n], credit)
	}
	if b.Pending() {
		t.Fatal("Pending after everything was read")
	}
	b.Add([]byte("0123456789"), 0)
	if n, credit := b.Take(p, 6, false); n != 10 || credit != 0 {
		t.Fatalf("Take after the end = %d credit %d, want 10 and no credit", n, credit)
	}
	b.Add([]byte("x"), 0)
	b.Drop()
	if b.Pending() {
		t.Fatal("Pending after Drop")
	}
}
