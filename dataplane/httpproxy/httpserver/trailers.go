package httpserver

import (
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// eachTrailer calls f for the trailer fields of a response with header h:
// the values of the keys that decl (the "Trailer" header's values) declares,
// then the http.TrailerPrefix keys, net/http's two ways to set them.
func eachTrailer(h http.Header, decl []string, f func(k, v string)) {
	for _, d := range decl {
		for k := range strings.SplitSeq(d, ",") {
			if k = strings.TrimSpace(k); k == "" {
				continue
			}
			k = http.CanonicalHeaderKey(k)
			for _, v := range h[k] {
				f(k, v)
			}
		}
	}
	for k, vs := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidHeaderFieldName(name) {
			for _, v := range vs {
				f(name, v)
			}
		}
	}
}
