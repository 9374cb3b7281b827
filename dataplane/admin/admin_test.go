package admin

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	var ready atomic.Bool
	s := New(Options{Addr: "127.0.0.1:0", Ready: ready.Load, ConfigDump: func() any {
		return map[string]string{"version": "v1"}
	}})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	base := "http://" + s.Addr()

	if code, body := get(t, c, base+"/ready"); code != 503 || body != "not ready\n" {
		t.Errorf("/ready before config = %d %q, want 503 \"not ready\\n\"", code, body)
	}
	ready.Store(true)
	if code, body := get(t, c, base+"/ready"); code != 200 || body != "ready\n" {
		t.Errorf("/ready after config = %d %q, want 200 \"ready\\n\"", code, body)
	}
	if code, _ := get(t, c, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}
	want := "{\n  \"version\": \"v1\"\n}\n"
	if code, body := get(t, c, base+"/config_dump"); code != 200 || body != want {
		t.Errorf("/config_dump = %d %q, want 200 %q", code, body, want)
	}
}
