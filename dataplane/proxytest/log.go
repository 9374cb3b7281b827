package proxytest

import (
	"log/slog"
	"os"
	"testing"
)

// Logger returns a logger that writes through t.Log when PROXYTEST_LOG is set and
// discards otherwise, so failing tests can be rerun with logs.
func Logger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("PROXYTEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("proxy", name)
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
