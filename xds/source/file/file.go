// Package file is a mesh model source reading a directory of multi-document,
// Kubernetes-style YAML files (*.yaml, *.yml): v1 Services, discovery.k8s.io/v1
// EndpointSlices, gateway.networking.k8s.io/v1 HTTPRoutes, and
// mesh.tinymesh.io/v1alpha1 PeerAuthentications, AuthorizationPolicies and
// Telemetries.
//
// Source.Run watches the directory with fsnotify, plus a cheap periodic rescan in
// case events are lost (editors that rename, network file systems), debounces
// bursts of changes and emits the whole model after every effective change. A
// directory that fails to parse or validate is logged (file, resource and field)
// and ignored: the last good model stays in force, never a partial one.
//
// Run owns one goroutine (the caller's) plus the fsnotify watcher's; both end
// when Run returns. The models passed to the callback are never touched again by
// this package.
package file

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tinymesh/tinymesh/xds/mesh"
)

// Source watches one directory. Its fields are set in New and by the caller
// before Run; they are read-only after.
type Source struct {
	dir string
	log *slog.Logger
	// Debounce is how long to wait for a burst of changes to end.
	Debounce time.Duration
	// Rescan is the period of the fallback full rescan.
	Rescan time.Duration
	// TrustDomain is the mesh's SPIFFE trust domain, which SPIFFE IDs in
	// AuthorizationPolicies must belong to; empty means
	// identity.DefaultTrustDomain. Set it to controlplane's --trust-domain.
	TrustDomain string
	// OnLoad, if set, is called on Run's goroutine after every attempt to load
	// a changed directory: with nil when the model was loaded (just before it
	// is applied), else with the error. The control plane counts reloads with
	// it.
	OnLoad func(err error)
}

// New returns a source for dir; logger may be nil.
func New(dir string, logger *slog.Logger) *Source {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Source{dir: dir, log: logger, Debounce: 100 * time.Millisecond, Rescan: 500 * time.Millisecond}
}

// Load reads, decodes, normalizes and validates every YAML file in dir once, in
// the default trust domain.
func Load(dir string) (*mesh.Model, error) {
	m, _, err := load(dir, "")
	return m, err
}

// Validate reads, decodes, normalizes and validates every YAML file in dir
// once, in trustDomain (empty: the default), exactly as Run does, and returns
// the model or every problem found, one error each: all documents that fail to
// decode, in every file; or, when all decode, every validation failure (a
// *mesh.FieldError naming file, resource and field). It is the offline check
// behind `controlplane validate`.
func Validate(dir, trustDomain string) (*mesh.Model, []error) {
	m, _, err := load(dir, trustDomain)
	if err != nil {
		return nil, Problems(err)
	}
	return m, nil
}

// Problems flattens an error from Load or Validate (errors.Join nested any
// deep) into its individual problems.
func Problems(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Problems(e)...)
		}
		return out
	}
	return []error{err}
}

// load also returns a fingerprint of the files it read, so that Run can tell
// whether anything changed since the last attempt.
func load(dir, trustDomain string) (*mesh.Model, [32]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("read model directory: %w", err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		names = append(names, n)
	}
	slices.Sort(names)
	h := sha256.New()
	m := &mesh.Model{Files: map[mesh.Key]string{}, TrustDomain: trustDomain}
	var errs []error
	for _, n := range names {
		path := filepath.Join(dir, n)
		data, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed between ReadDir and ReadFile; the next event reloads
			}
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(data))
		h.Write(data)
		if err := Decode(path, data, m); err != nil {
			errs = append(errs, err)
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if len(errs) > 0 {
		return nil, sum, errors.Join(errs...)
	}
	m.Normalize()
	if err := m.Validate(); err != nil {
		return nil, sum, err
	}
	return m, sum, nil
}

// Run loads the directory and calls apply with every new good model, on the
// calling goroutine, until ctx is done. It returns ctx's error, or an error if the
// directory cannot be watched at all.
func (s *Source) Run(ctx context.Context, apply func(*mesh.Model)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.dir, err)
	}
	defer w.Close()
	if err := w.Add(s.dir); err != nil {
		// Keep going on the rescan alone: the directory may appear later.
		s.log.Warn("cannot watch model directory, falling back to rescans", "dir", s.dir, "err", err)
	}

	var last [32]byte
	first := true
	reload := func() {
		m, sum, err := load(s.dir, s.TrustDomain)
		if !first && sum == last {
			return // nothing changed since the last attempt, good or bad
		}
		first, last = false, sum
		if s.OnLoad != nil {
			s.OnLoad(err)
		}
		if err != nil {
			s.logErrors(err)
			return
		}
		s.log.Info("mesh model loaded", "dir", s.dir, "services", len(m.Services),
			"endpointSlices", len(m.EndpointSlices), "httpRoutes", len(m.HTTPRoutes),
			"peerAuthentications", len(m.PeerAuthentications), "authorizationPolicies", len(m.AuthorizationPolicies),
			"telemetries", len(m.Telemetries))
		apply(m)
	}
	reload()

	rescan := time.NewTicker(s.Rescan)
	defer rescan.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("fsnotify watcher closed")
			}
			if strings.HasSuffix(ev.Name, ".yaml") || strings.HasSuffix(ev.Name, ".yml") {
				debounce.Reset(s.Debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("fsnotify watcher closed")
			}
			s.log.Warn("model directory watch error", "dir", s.dir, "err", err)
		case <-debounce.C:
			reload()
		case <-rescan.C:
			reload()
		}
	}
}

// logErrors logs each problem on its own line, with the file, resource and field
// as attributes when known.
func (s *Source) logErrors(err error) {
	for _, e := range Problems(err) {
		var fe *mesh.FieldError
		if errors.As(e, &fe) {
			s.log.Error("invalid mesh model; keeping the last good one", "file", fe.File,
				"resource", fe.Key.String(), "field", fe.Field, "err", e)
			continue
		}
		s.log.Error("invalid mesh model; keeping the last good one", "dir", s.dir, "err", e)
	}
}
