package hub

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
)

// Buffer sizes of a socket's connection. coder/websocket reads and writes
// through a bufio.Reader and a bufio.Writer, which net/http hands over at
// 4 KiB each and which every idle socket would keep. Client frames are
// small, and writes collect in the outbox's pooled buffer instead, so both
// can be small.
const (
	readBufSize  = 1024
	writeBufSize = 512
	// maxOutBuf is the largest outbox buffer: past it a corked outbox
	// writes out what it holds, and a larger buffer is not pooled.
	maxOutBuf = 64 << 10
)

// outbox is where a socket's bytes go. coder/websocket flushes its
// bufio.Writer after every frame, one system call each; while the outbox
// is corked, what is flushed collects in a pooled buffer that uncork writes
// out in one system call, so that a batch of frames costs one write, and an
// idle socket holds no write buffer. Frames the library writes on its own
// (pongs, the close handshake) while it is corked go out with the batch, in
// order. It is safe for concurrent use.
type outbox struct {
	mu     sync.Mutex
	conn   net.Conn
	pool   *sync.Pool // of *[]byte
	buf    *[]byte    // nil unless corked and written to
	corked bool
}

// Write writes p to the connection, or collects it while corked.
func (o *outbox) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.corked {
		return o.conn.Write(p)
	}
	if o.buf == nil {
		if b, ok := o.pool.Get().(*[]byte); ok {
			o.buf = b
		} else {
			b := make([]byte, 0, 4096)
			o.buf = &b
		}
	}
	*o.buf = append(*o.buf, p...)
	if len(*o.buf) >= maxOutBuf {
		if err := o.writeOutLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// cork starts collecting writes.
func (o *outbox) cork() {
	o.mu.Lock()
	o.corked = true
	o.mu.Unlock()
}

// uncork writes out what was collected and stops collecting.
func (o *outbox) uncork() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.corked = false
	return o.writeOutLocked()
}

// writeOutLocked writes the buffer out and returns it to the pool. o.mu is
// held.
func (o *outbox) writeOutLocked() error {
	if o.buf == nil {
		return nil
	}
	b := o.buf
	o.buf = nil
	_, err := o.conn.Write(*b)
	if cap(*b) <= maxOutBuf {
		*b = (*b)[:0]
		o.pool.Put(b)
	}
	return err
}

// upgradeWriter is the http.ResponseWriter handed to websocket.Accept: its
// Hijack replaces net/http's 4 KiB buffers with small ones and puts the
// outbox under the writes.
type upgradeWriter struct {
	http.ResponseWriter
	pool *sync.Pool
	out  *outbox // set by Hijack
}

// Hijack hijacks the connection (see http.Hijacker).
func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	var r io.Reader = nc
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right after its request.
		b, _ := brw.Reader.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc)
	}
	if n := brw.Writer.Buffered(); n > 0 {
		// net/http flushes the response before it hijacks; if it ever
		// did not, this writes what it left.
		if err := brw.Writer.Flush(); err != nil {
			nc.Close()
			return nil, nil, err
		}
	}
	w.out = &outbox{conn: nc, pool: w.pool}
	return nc, bufio.NewReadWriter(bufio.NewReaderSize(r, readBufSize), bufio.NewWriterSize(w.out, writeBufSize)), nil
}
