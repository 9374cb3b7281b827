package httpserver

import "strings"

// commonCanonical maps the lower-case names of frequent header fields to
// their canonical form, and commonLower back, so that converting them
// between HTTP/2 and net/http does not allocate.
var commonCanonical, commonLower = func() (map[string]string, map[string]string) {
	canon, low := map[string]string{}, map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Grpc-Accept-Encoding",
		"Grpc-Encoding", "Grpc-Message", "Grpc-Status", "Grpc-Timeout", "If-Modified-Since", "If-None-Match",
		"Location", "Origin", "Referer", "Server", "Set-Cookie", "Te", "Trailer", "Traceparent", "Tracestate",
		"User-Agent", "X-B3-Sampled", "X-B3-Spanid", "X-B3-Traceid", "X-Envoy-Attempt-Count",
		"X-Envoy-Expected-Rq-Timeout-Ms", "X-Forwarded-Client-Cert", "X-Forwarded-For", "X-Forwarded-Proto",
		"X-Request-Id", "X-Meshproxy-Error"} {
		l := strings.ToLower(k)
		canon[l], low[k] = k, l
	}
	return canon, low
}()

func lower(k string) string {
	if l, ok := commonLower[k]; ok {
		return l
	}
	return strings.ToLower(k)
}
