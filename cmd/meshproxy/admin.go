package main

import (
	"context"
	"log/slog"
	"sync"
)

// adminDrain returns the admin endpoint's POST /drain action: it cancels the
// context run's signal handling derives from, so a drain requested over HTTP
// takes exactly the SIGTERM path (leave the control plane, keep serving for
// --drain-delay, drain within --shutdown-grace, exit 0).
func adminDrain(cancel context.CancelFunc, log *slog.Logger) func() {
	var once sync.Once
	return func() {
		once.Do(func() { log.Info("drain requested on the admin endpoint") })
		cancel()
	}
}
