package h2wire

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// readBoth sends blocks, each as a HEADERS frame and CONTINUATION frames
// of at most chunk bytes, and reads them back twice: with x/net's Framer
// decoding (ReadMetaHeaders) and with a HeaderReader. It returns what each
// read, one line per block, until the first error that ends the
// connection.
func readBoth(t testing.TB, blocks [][]byte, chunk int, maxList uint32) (want, got []string) {
	var wire bytes.Buffer
	w := http2.NewFramer(&wire, nil)
	for i, b := range blocks {
		id := uint32(2*i + 1)
		if err := WriteHeaderBlock(w, id, i%2 == 0, uint32(chunk), b); err != nil {
			t.Fatal(err)
		}
	}
	raw := wire.Bytes()

	ref := http2.NewFramer(nil, bytes.NewReader(raw))
	ref.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	ref.MaxHeaderListSize = maxList
	for range blocks {
		f, err := ref.ReadFrame()
		var mh *http2.MetaHeadersFrame
		if err == nil {
			mh = f.(*http2.MetaHeadersFrame)
		}
		line, end := describe(mh, err)
		want = append(want, line)
		if end {
			break
		}
	}

	fr := http2.NewFramer(nil, bytes.NewReader(raw))
	fr.MaxHeaderListSize = maxList
	var hr HeaderReader
	hr.Init(maxList)
	for range blocks {
		f, err := fr.ReadFrame()
		var mh *http2.MetaHeadersFrame
		if err == nil {
			mh, err = hr.Read(fr, f.(*http2.HeadersFrame))
		}
		line, end := describe(mh, err)
		got = append(got, line)
		if end {
			break
		}
	}
	return want, got
}

// describe renders a decoded block, or its error by kind and code (the
// causes' texts differ); end reports an error that ends the connection.
func describe(mh *http2.MetaHeadersFrame, err error) (line string, end bool) {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("stream %d error %v", se.StreamID, se.Code), false
	case errors.As(err, &ce):
		return fmt.Sprintf("connection error %v", http2.ErrCode(ce)), true
	case err != nil:
		return "error " + err.Error(), true
	}
	return fmt.Sprintf("stream %d end_stream=%v truncated=%v fields=%q", mh.StreamID, mh.StreamEnded(), mh.Truncated, mh.Fields), false
}

func encode(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

// blockCases are header blocks the Framer accepts, truncates or refuses,
// one HPACK context each (the encoder's table is not shared between cases).
var blockCases = map[string][][]byte{
	"request":           {encode(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a", "x-request-id", "1", "accept", "*/*")},
	"response":          {encode(":status", "200", "content-type", "text/plain", "content-length", "2")},
	"trailers":          {encode("grpc-status", "0", "grpc-message", "")},
	"upper-case name":   {encode(":status", "200", "Content-Type", "x")},
	"bad value":         {encode(":status", "200", "x", "a\x00b")},
	"pseudo after":      {encode("x", "1", ":status", "200")},
	"unknown pseudo":    {encode(":bogus", "1")},
	"duplicate pseudo":  {encode(":status", "200", ":status", "204")},
	"mixed pseudo":      {encode(":status", "200", ":path", "/")},
	"too large":         {encode(":status", "200", "x", string(bytes.Repeat([]byte("v"), 300)))},
	"trailer list":      {encode(":status", "200", "trailer", "a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u, v, w, x, y, z")},
	"bad hpack":         {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	"truncated hpack":   {{0x40, 0x05, 'a'}},
	"then a second one": {encode(":status", "200", "a", "1"), encode(":status", "404", "a", "1", "b", "2")},
}

// TestHeaderReaderMatchesFramer: for each case, split into frames of
// several sizes and read under several list limits, a HeaderReader returns
// what x/net's Framer returns.
func TestHeaderReaderMatchesFramer(t *testing.T) {
	for name, blocks := range blockCases {
		for _, chunk := range []int{1, 7, 16384} {
			for _, maxList := range []uint32{0, 100, 4096} {
				want, got := readBoth(t, blocks, chunk, maxList)
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("%s, frames of %d bytes, list limit %d (-Framer +HeaderReader):\n%s", name, chunk, maxList, d)
				}
			}
		}
	}
}

// TestHeaderReaderReusesItsFields: once the fields are in the dynamic
// table, decoding a block allocates nothing: only the Framer's HeadersFrame
// remains.
func TestHeaderReaderReusesItsFields(t *testing.T) {
	var wire, block bytes.Buffer
	w := http2.NewFramer(&wire, nil)
	enc := hpack.NewEncoder(&block)
	const n = 50
	for i := range n + 1 {
		block.Reset()
		for _, f := range [][2]string{{":status", "200"}, {"content-type", "text/plain"}, {"content-length", "2"}, {"date", "x"}, {"server", "s"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		WriteHeaderBlock(w, uint32(2*i+1), true, 16384, block.Bytes())
	}
	fr := http2.NewFramer(nil, bytes.NewReader(wire.Bytes()))
	var hr HeaderReader
	hr.Init(4096)
	read := func() {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		mh, err := hr.Read(fr, f.(*http2.HeadersFrame))
		if err != nil || len(mh.Fields) != 5 {
			t.Fatalf("read %v, %v", mh, err)
		}
	}
	read()
	if a := testing.AllocsPerRun(n-1, read); a > 1 {
		t.Errorf("%v allocations a block, want at most 1 (the Framer's HeadersFrame)", a)
	}
}

// FuzzHeaderReaderMatchesFramer: any bytes, as one or two header blocks
// split into frames of any size, read the same as with x/net's Framer.
func FuzzHeaderReaderMatchesFramer(f *testing.F) {
	for _, blocks := range blockCases {
		f.Add(bytes.Join(blocks, nil), uint8(len(blocks[0])), uint8(7), uint16(4096))
	}
	f.Fuzz(func(t *testing.T, data []byte, split, chunk uint8, maxList uint16) {
		blocks := [][]byte{data}
		if k := int(split); k < len(data) {
			blocks = [][]byte{data[:k], data[k:]}
		}
		want, got := readBoth(t, blocks, int(chunk)+1, uint32(maxList))
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("(-Framer +HeaderReader):\n%s", d)
		}
	})
}
