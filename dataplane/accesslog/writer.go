package accesslog

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"

	"github.com/tinymesh/tinymesh/dataplane/config"
	"github.com/tinymesh/tinymesh/dataplane/stream"
)

// queueLen bounds the lines waiting for one file's writer.
const queueLen = 4096

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Set owns the writers of every access log file, shared by the listeners that
// log to the same path and kept across snapshots.
type Set struct {
	mu      sync.Mutex
	writers map[string]*writer // by path; guarded by mu
	closed  bool               // guarded by mu
	dropped atomic.Uint64
}

// NewSet returns an empty Set.
func NewSet() *Set { return &Set{writers: map[string]*writer{}} }

// Dropped counts lines dropped because a writer's queue was full.
func (s *Set) Dropped() uint64 { return s.dropped.Load() }

// writer is one file and the goroutine that writes it.
type writer struct {
	q    chan *[]byte
	done chan struct{}
}

func (s *Set) writer(path string) (*writer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("access log %s: set closed", path)
	}
	if w, ok := s.writers[path]; ok {
		return w, nil
	}
	var out io.Writer
	var closer io.Closer
	switch path {
	case "/dev/stdout":
		out = os.Stdout
	case "/dev/stderr":
		out = os.Stderr
	default:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("access log: %w", err)
		}
		out, closer = f, f
	}
	w := &writer{q: make(chan *[]byte, queueLen), done: make(chan struct{})}
	go w.run(out, closer)
	s.writers[path] = w
	return w, nil
}

// run writes queued lines, flushing whenever the queue is empty, until the
// queue is closed.
func (w *writer) run(out io.Writer, closer io.Closer) {
	defer close(w.done)
	bw := bufio.NewWriterSize(out, 64<<10)
	for line := range w.q {
		bw.Write(*line)
		*line = (*line)[:0]
		linePool.Put(line)
		if len(w.q) == 0 {
			bw.Flush()
		}
	}
	bw.Flush()
	if closer != nil {
		closer.Close()
	}
}

// Close flushes every file and stops its writer; Loggers must not be used
// afterwards.
func (s *Set) Close() {
	s.mu.Lock()
	s.closed = true
	ws := s.writers
	s.writers = nil
	s.mu.Unlock()
	for _, w := range ws {
		close(w.q)
		<-w.done
	}
}

// Logger is one compiled access_log entry.
type Logger struct {
	f      *Formatter
	w      *writer
	sample uint32 // per million
	set    *Set
}

// New compiles cfg and opens (or shares) its file.
func (s *Set) New(cfg config.AccessLog) (*Logger, error) {
	var f *Formatter
	var err error
	if len(cfg.JSON) > 0 {
		keys, formats := make([]string, len(cfg.JSON)), make([]string, len(cfg.JSON))
		for i, kv := range cfg.JSON {
			keys[i], formats[i] = kv.Key, kv.Format
		}
		f, err = NewJSON(keys, formats)
	} else {
		f, err = NewText(cfg.Text)
	}
	if err != nil {
		return nil, fmt.Errorf("access log %s: %w", cfg.Path, err)
	}
	w, err := s.writer(cfg.Path)
	if err != nil {
		return nil, err
	}
	return &Logger{f: f, w: w, sample: cfg.SamplePerMillion, set: s}, nil
}

// Observe logs info, unless sampled out; it never blocks. It is a
// stream.Observer.
func (l *Logger) Observe(info *stream.Info) {
	if l.sample < 1_000_000 && rand.Uint32N(1_000_000) >= l.sample {
		return
	}
	bp := linePool.Get().(*[]byte)
	*bp = l.f.Append((*bp)[:0], info)
	defer func() {
		// The queue was closed by Set.Close: the proxy is shutting down.
		if recover() != nil {
			l.set.dropped.Add(1)
		}
	}()
	select {
	case l.w.q <- bp:
	default:
		l.set.dropped.Add(1)
		linePool.Put(bp)
	}
}
