package h2wire

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HeaderReader decodes the header blocks one connection receives, with the
// checks and limits of x/net's Framer when its ReadMetaHeaders is set, into
// a MetaHeadersFrame it reuses. The Framer's allocates the frame and grows
// its field list anew for every block, five allocations of the nine a
// request's block cost each sidecar; here the list keeps its array. Use it
// from the connection's frame reader only; the zero value is not usable:
// call Init.
type HeaderReader struct {
	dec     *hpack.Decoder
	maxList uint32 // SETTINGS_MAX_HEADER_LIST_SIZE this end announced
	mh      http2.MetaHeadersFrame

	// The block being decoded.
	headersLeft, trailersLeft uint32
	sawRegular                bool
	invalid                   error
}

// Init readies r for blocks of at most maxList bytes (as the Framer counts
// them: RFC 9113 section 6.5.2; 0 means the Framer's default, 16 MiB); r
// must not move afterwards.
func (r *HeaderReader) Init(maxList uint32) {
	if maxList == 0 {
		maxList = 16 << 20 // the Framer's default
	}
	r.maxList = maxList
	r.dec = hpack.NewDecoder(4096, r.emit)
	r.dec.SetMaxStringLength(int(maxList))
}

// Read decodes the header block that hf starts, reading its CONTINUATION
// frames from fr (which must not have ReadMetaHeaders set), and returns it
// as the Framer would have: a StreamError for a malformed block (invalid
// or misplaced fields and pseudo-fields), a ConnectionError when the
// decoder's state is lost or the peer sends far beyond the limit. A block
// over the limit is returned Truncated. The frame returned is valid until
// the next Read.
func (r *HeaderReader) Read(fr *http2.Framer, hf *http2.HeadersFrame) (*http2.MetaHeadersFrame, error) {
	r.mh = http2.MetaHeadersFrame{HeadersFrame: hf, Fields: r.mh.Fields[:0]}
	r.headersLeft, r.trailersLeft = r.maxList, r.maxList
	r.sawRegular, r.invalid = false, nil
	r.dec.SetEmitEnabled(true)
	frag, ended := hf.HeaderBlockFragment(), hf.HeadersEnded()
	for {
		// As the Framer does: stop decoding a peer far over the limit, or
		// one that goes on after an invalid field (whose size was not
		// counted), and close the connection.
		if int64(len(frag)) > 2*int64(r.headersLeft+r.trailersLeft) || r.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := r.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf := f.(*http2.ContinuationFrame) // the Framer checks the order of frames
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := r.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if r.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: r.invalid}
	}
	if err := checkPseudos(r.mh.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return &r.mh, nil
}

var errPseudoAfterRegular = errors.New("h2: pseudo header field after regular")

func (r *HeaderReader) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		// Not the value: it may be sensitive.
		r.invalid = fmt.Errorf("h2: invalid header field value for %q", hf.Name)
	}
	if strings.HasPrefix(hf.Name, ":") {
		if r.sawRegular {
			r.invalid = errPseudoAfterRegular
		}
	} else {
		r.sawRegular = true
		if !validFieldName(hf.Name) {
			r.invalid = fmt.Errorf("h2: invalid header field name %q", hf.Name)
		}
	}
	if r.invalid != nil {
		r.dec.SetEmitEnabled(false)
		return
	}
	left, size := &r.headersLeft, hf.Size()
	if hf.Name == "trailer" {
		// Counted as the Framer counts it: as if each name it declares
		// were a field of its own.
		n := uint32(strings.Count(hf.Value, ",") + 1)
		left, size = &r.trailersLeft, uint32(len(hf.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *left {
		r.dec.SetEmitEnabled(false)
		r.mh.Truncated = true
		r.headersLeft, r.trailersLeft = 0, 0
		return
	}
	*left -= size
	r.mh.Fields = append(r.mh.Fields, hf)
}

// validFieldName: a token without upper case (RFC 9113 section 8.2.1).
func validFieldName(v string) bool {
	if v == "" {
		return false
	}
	for _, c := range v {
		if !httpguts.IsTokenRune(c) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// checkPseudos: known pseudo-fields only, each at most once, of a request
// or of a response, not both.
func checkPseudos(pf []hpack.HeaderField) error {
	var request, response bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("h2: invalid pseudo-header %q", hf.Name)
		}
		for _, prev := range pf[:i] {
			if hf.Name == prev.Name {
				return fmt.Errorf("h2: duplicate pseudo-header %q", hf.Name)
			}
		}
	}
	if request && response {
		return errors.New("h2: mix of request and response pseudo headers")
	}
	return nil
}
