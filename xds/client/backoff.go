package client

import (
	"math/rand/v2"
	"time"
)

// backoff returns the delay before reconnect attempt n (0-based): exponential
// from base, capped at max, with "equal jitter" (half fixed, half random) so a
// fleet of proxies does not reconnect in lockstep after a control-plane restart.
func backoff(n int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + rand.N(half+1)
}
