package framing

// Frame runs the parser of a Conn over stream, fed in pieces of the given
// sizes (cycled; none: all at once), as Read sees a stream arrive. It returns
// the offset just past each request it completed, how many bytes it accepted
// (all, or those before the first it refused) and why it refused, if it did.
func Frame(stream []byte, limit int, pieces ...int) (ends []int, accepted int, err error) {
	p := newParser(limit)
	base := 0
	p.done = func(at int) { ends = append(ends, base+at) }
	for k := 0; base < len(stream); k++ {
		size := len(stream) - base
		if len(pieces) > 0 {
			size = min(max(pieces[k%len(pieces)], 1), size)
		}
		n, rerr := p.scan(stream[base : base+size])
		if rerr != nil {
			return ends, base + n, rerr
		}
		base += size
	}
	return ends, base, nil
}

// Scanner is the parser of a Conn, for benchmarks.
type Scanner struct{ p parser }

// NewScanner returns a parser with the given head bound.
func NewScanner(limit int) *Scanner { return &Scanner{p: newParser(limit)} }

// Scan follows the next bytes of a stream.
func (s *Scanner) Scan(b []byte) (int, error) {
	n, err := s.p.scan(b)
	if err != nil {
		return n, err
	}
	return n, nil
}
