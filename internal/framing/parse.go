package framing

// state is where the parser is in the request stream.
type state uint8

const (
	sReqStart   state = iota // before a request line
	sLeadLF                  // after the CR of the one CRLF tolerated after a POST
	sMethod                  // in the method
	sTargetHead              // first byte of the request-target
	sTarget                  // in the request-target
	sVersion                 // in the version
	sLineLF                  // after the CR ending the request line
	sFieldStart              // at the start of a field line (head or trailer)
	sName                    // in a field name
	sValue                   // in a field value
	sFieldLF                 // after the CR ending a field line
	sEndLF                   // after the CR of the empty line ending a head or trailer
	sBody                    // in a Content-Length body
	sChunkSize               // in a chunk size
	sChunkExt                // in a chunk extension (ext holds where)
	sChunkLF                 // after the CR ending a chunk line
	sChunkData               // in chunk data
	sDataCR                  // expecting the CR after chunk data
	sDataLF                  // expecting the LF after chunk data
)

// ext is where the parser is in a chunk extension (RFC 9112 §7.1.1):
// *( BWS ";" BWS name [ BWS "=" BWS value ] ).
type ext uint8

const (
	eNameStart  ext = iota // after ';': BWS, then a name
	eName                  // in a name
	eAfterName             // BWS after a name
	eValStart              // after '=': BWS, then a token or quoted string
	eValToken              // in a token value
	eValQuoted             // in a quoted string
	eQuotedPair            // after a backslash in a quoted string
	eAfterVal              // BWS after a value
)

// field is a header field whose value the parser reads.
type field uint8

const (
	fOther field = iota
	fContentLength
	fTransferEncoding
	fHost
	fUpgrade
)

// fieldNames are the lower-case names of the fields the parser reads,
// indexed by field.
var fieldNames = [...]string{
	fContentLength:    "content-length",
	fTransferEncoding: "transfer-encoding",
	fHost:             "host",
	fUpgrade:          "upgrade",
}

const (
	// maxAuthority bounds the Host value and the absolute-form authority
	// kept for comparing them: longer than any host name with a port.
	maxAuthority = 300
	// maxChunkLine bounds a chunk-size line with its extensions (net/http
	// allows 4094 bytes; extensions are rare and short).
	maxChunkLine = 1024
	// maxChunkSize is the largest chunk size: 63 bits, as Content-Length.
	maxChunkSize = 1<<63 - 1
	// version is the version prefix; the last digit is '1' or '0'.
	version = "HTTP/1."
)

// parser follows the framing of a stream of HTTP/1.x requests (RFC 9112)
// byte by byte, and stops at the first byte that makes it ambiguous or
// malformed. It keeps no more than a few hundred bytes of state and does not
// allocate.
type parser struct {
	st state

	// limit bounds a head and a trailer section; n counts the bytes of the
	// current head, trailer section or chunk line.
	limit int
	n     int

	// Request line.
	leadOK    bool  // the previous request was a POST: one CRLF may precede this one
	post      uint8 // how much of "POST" the method matched; 0xff: not POST
	verIdx    uint8
	http10    bool
	origin    bool // the target is in origin form ("/...")
	target    [maxAuthority]byte
	targetLen int // bytes of a non-origin target kept in target (capped)

	// Field lines.
	trailer bool  // in the trailer section of a chunked body
	fld     field // the field whose name is being matched or value read
	nameIdx int
	vst     uint8 // state within the value of fld (per field)
	vIdx    uint8

	// Facts about the head.
	clCount, teCount, hostCount uint8
	cl                          int64
	host                        [maxAuthority]byte
	hostLen                     int
	hostLong                    bool

	// Bodies.
	remaining uint64 // of a Content-Length body or of chunk data
	size      uint64 // the chunk size being read
	digits    uint8
	ext       ext

	// done, if set, is called with the offset in the scanned slice just
	// past each request completed (tests use it to compare boundaries).
	done func(at int)
}

func newParser(limit int) parser { return parser{limit: limit} }

// Character classes as bit sets, as in pathnorm: bit c of lo is byte c
// (0-63), bit c-64 of hi is byte c (64-127).
const (
	digitLo uint64 = (1<<10 - 1) << '0'
	alphaHi uint64 = (1<<26-1)<<('A'-64) | (1<<26-1)<<('a'-64)
	// tchar (RFC 9110 §5.6.2).
	tokenLo uint64 = digitLo | 1<<'!' | 1<<'#' | 1<<'$' | 1<<'%' | 1<<'&' | 1<<'\'' | 1<<'*' | 1<<'+' | 1<<'-' | 1<<'.'
	tokenHi uint64 = alphaHi | 1<<('^'-64) | 1<<('_'-64) | 1<<('`'-64) | 1<<('|'-64) | 1<<('~'-64)
)

func isToken(c byte) bool {
	switch {
	case c < 64:
		return tokenLo&(1<<c) != 0
	case c < 128:
		return tokenHi&(1<<(c-64)) != 0
	}
	return false
}

// isValue reports whether c may appear in a field value: HTAB, SP, VCHAR
// and obs-text (RFC 9110 §5.5), everything but the control characters.
func isValue(c byte) bool { return c >= ' ' && c != 0x7f || c == '\t' }

// isTarget reports whether c may appear in a request-target as net/http
// reads it: no space and no control character.
func isTarget(c byte) bool { return c > ' ' && c != 0x7f }

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func unhex(c byte) (uint64, bool) {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0'), true
	case c >= 'a' && c <= 'f':
		return uint64(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return uint64(c-'A') + 10, true
	}
	return 0, false
}

// scan follows b, the next bytes of the stream. It returns len(b) and nil
// when every byte is acceptable, or the offset of the first byte that is not
// and why (the bytes before it are acceptable; the parser must not be used
// again).
func (p *parser) scan(b []byte) (int, *Error) {
	i := 0
	for i < len(b) {
		switch p.st {
		case sBody:
			if rest := uint64(len(b) - i); rest < p.remaining {
				p.remaining -= rest
				return len(b), nil
			}
			i += int(p.remaining)
			p.remaining = 0
			p.complete(i)
			continue
		case sChunkData:
			if rest := uint64(len(b) - i); rest < p.remaining {
				p.remaining -= rest
				return len(b), nil
			}
			i += int(p.remaining)
			p.remaining = 0
			p.st = sDataCR
			continue
		case sTarget:
			// Fast path: the bytes of an origin-form target.
			if p.origin {
				j := i
				for j < len(b) && isTarget(b[j]) {
					j++
				}
				if j-i > p.limit-p.n {
					return i + p.limit - p.n, errHeadTooLarge
				}
				p.n += j - i
				if i = j; i == len(b) {
					return i, nil
				}
			}
		case sName:
			// Fast path: the name of a field the parser does not read.
			if p.fld == fOther {
				j := i
				for j < len(b) && isToken(b[j]) {
					j++
				}
				if j-i > p.limit-p.n {
					return i + p.limit - p.n, p.tooLarge()
				}
				p.n += j - i
				if i = j; i == len(b) {
					return i, nil
				}
			}
		case sValue:
			// Fast path: the value of a field the parser does not read.
			if p.fld == fOther {
				j := i
				for j < len(b) && isValue(b[j]) {
					j++
				}
				if j-i > p.limit-p.n {
					return i + p.limit - p.n, p.tooLarge()
				}
				p.n += j - i
				if i = j; i == len(b) {
					return i, nil
				}
			}
		}
		if err := p.step(b[i], i); err != nil {
			return i, err
		}
		i++
	}
	return i, nil
}

// tooLarge is the error for a head or trailer section over the limit.
func (p *parser) tooLarge() *Error {
	if p.trailer {
		return errTrailerTooLarge
	}
	return errHeadTooLarge
}

// pick returns head or trailer, for a violation in a field line.
func (p *parser) pick(head, trailer *Error) *Error {
	if p.trailer {
		return trailer
	}
	return head
}

// complete ends a request at offset at of the scanned slice.
func (p *parser) complete(at int) {
	p.st = sReqStart
	p.n = 0
	if p.done != nil {
		p.done(at)
	}
}

// step consumes one byte c at offset at of the scanned slice.
func (p *parser) step(c byte, at int) *Error {
	switch p.st {
	case sReqStart, sLeadLF, sMethod, sTargetHead, sTarget, sVersion, sLineLF,
		sFieldStart, sName, sValue, sFieldLF, sEndLF:
		if p.n++; p.n > p.limit {
			return p.tooLarge()
		}
	case sChunkSize, sChunkExt, sChunkLF:
		if p.n++; p.n > maxChunkLine {
			return errChunkLine
		}
	}
	switch p.st {
	case sReqStart:
		if c == '\r' && p.leadOK {
			// net/http skips line breaks after a POST (RFC 9112 §2.2):
			// one CRLF is tolerated.
			p.leadOK = false
			p.st = sLeadLF
			return nil
		}
		if !isToken(c) {
			if c == '\r' || c == '\n' {
				return errLeadingLine
			}
			return errMethod
		}
		p.startRequest()
		p.st = sMethod
		p.matchPOST(c)
	case sLeadLF:
		if c != '\n' {
			return errBareCR
		}
		p.n = 0
		p.st = sReqStart
	case sMethod:
		switch {
		case isToken(c):
			p.matchPOST(c)
		case c == ' ':
			p.st = sTargetHead
		default:
			return errMethod
		}
	case sTargetHead:
		if !isTarget(c) {
			return errTarget
		}
		p.origin = c == '/'
		if !p.origin {
			p.target[0] = c
			p.targetLen = 1
		}
		p.st = sTarget
	case sTarget:
		switch {
		case isTarget(c):
			if !p.origin && p.targetLen < len(p.target) {
				p.target[p.targetLen] = c
				p.targetLen++
			}
		case c == ' ':
			p.st = sVersion
			p.verIdx = 0
		default:
			return errTarget
		}
	case sVersion:
		switch {
		case int(p.verIdx) < len(version):
			if c != version[p.verIdx] {
				return errVersion
			}
		case int(p.verIdx) == len(version):
			if c != '1' && c != '0' {
				return errVersion
			}
			p.http10 = c == '0'
		default:
			switch c {
			case '\r':
				p.st = sLineLF
			case '\n':
				return errBareLF
			default:
				return errVersion
			}
		}
		p.verIdx++
	case sLineLF:
		if c != '\n' {
			return errBareCR
		}
		p.st = sFieldStart
	case sFieldStart:
		switch {
		case c == '\r':
			p.st = sEndLF
		case isToken(c):
			p.st = sName
			p.startName(c)
		case c == ' ' || c == '\t':
			return p.pick(errObsFold, errTrailerFold)
		case c == '\n':
			return p.pick(errBareLF, errTrailerLF)
		default:
			return p.pick(errFieldName, errTrailerName)
		}
	case sName:
		switch {
		case isToken(c):
			p.matchName(c)
		case c == ':':
			return p.endName()
		case c == ' ' || c == '\t':
			return p.pick(errSpaceColon, errTrailerColon)
		default:
			return p.pick(errFieldName, errTrailerName)
		}
	case sValue:
		switch {
		case c == '\r':
			p.st = sFieldLF
		case c == '\n':
			return p.pick(errBareLF, errTrailerLF)
		case !isValue(c):
			return p.pick(errFieldValue, errTrailerValue)
		default:
			return p.value(c)
		}
	case sFieldLF:
		if c != '\n' {
			return p.pick(errBareCR, errTrailerCR)
		}
		if err := p.endField(); err != nil {
			return err
		}
		p.st = sFieldStart
	case sEndLF:
		if c != '\n' {
			return p.pick(errBareCR, errTrailerCR)
		}
		if p.trailer {
			p.complete(at + 1)
			return nil
		}
		return p.endHead(at + 1)
	case sChunkSize:
		if d, ok := unhex(c); ok {
			if p.digits++; p.digits > 16 || p.size > maxChunkSize>>4 {
				return errChunkOverflow
			}
			p.size = p.size<<4 | d
			return nil
		}
		if p.digits == 0 {
			return errChunkSize
		}
		switch c {
		case ';':
			p.st, p.ext = sChunkExt, eNameStart
		case '\r':
			p.st = sChunkLF
		default:
			return errChunkSize
		}
	case sChunkExt:
		return p.chunkExt(c)
	case sChunkLF:
		if c != '\n' {
			return errChunkBareCR
		}
		if p.size == 0 {
			// The last chunk: a trailer section follows.
			p.trailer = true
			p.n = 0
			p.st = sFieldStart
			return nil
		}
		p.remaining = p.size
		p.st = sChunkData
	case sDataCR:
		if c != '\r' {
			return errChunkCRLF
		}
		p.st = sDataLF
	case sDataLF:
		if c != '\n' {
			return errChunkCRLF
		}
		p.startChunk()
	}
	return nil
}

// startRequest resets what the parser knows about a request.
func (p *parser) startRequest() {
	p.n = 1
	p.leadOK = false
	p.post = 0
	p.http10 = false
	p.origin = false
	p.targetLen = 0
	p.trailer = false
	p.clCount, p.teCount, p.hostCount = 0, 0, 0
	p.cl = 0
	p.hostLen = 0
	p.hostLong = false
}

// matchPOST follows whether the method is exactly "POST".
func (p *parser) matchPOST(c byte) {
	const post = "POST"
	if int(p.post) < len(post) && c == post[p.post] {
		p.post++
	} else {
		p.post = 0xff
	}
}

// startName starts matching a field name at its first byte c.
func (p *parser) startName(c byte) {
	p.fld, p.nameIdx = fOther, 1
	if p.trailer {
		return // trailer fields do not frame anything
	}
	switch lower(c) {
	case 'c':
		p.fld = fContentLength
	case 't':
		p.fld = fTransferEncoding
	case 'h':
		p.fld = fHost
	case 'u':
		p.fld = fUpgrade
	}
}

// matchName follows the name being matched with its next byte c.
func (p *parser) matchName(c byte) {
	if p.fld == fOther {
		return
	}
	name := fieldNames[p.fld]
	if p.nameIdx >= len(name) || lower(c) != name[p.nameIdx] {
		p.fld = fOther
		return
	}
	p.nameIdx++
}

// endName ends a field name at its colon.
func (p *parser) endName() *Error {
	if p.fld != fOther && p.nameIdx != len(fieldNames[p.fld]) {
		p.fld = fOther
	}
	p.vst, p.vIdx = 0, 0
	p.st = sValue
	switch p.fld {
	case fContentLength:
		if p.clCount++; p.clCount > 1 {
			return errCLDuplicate
		}
	case fTransferEncoding:
		if p.http10 {
			return errTEHTTP10
		}
		if p.teCount++; p.teCount > 1 {
			return errTEDuplicate
		}
	case fHost:
		if p.hostCount++; p.hostCount > 1 {
			return errHostDuplicate
		}
	}
	return nil
}

// States within a value, in vst.
const (
	vLead  = iota // leading whitespace
	vIn           // in the value proper
	vTrail        // trailing whitespace (Content-Length, Transfer-Encoding)
	vOther        // Upgrade: in an element that is not h2c
	vH2C          // Upgrade: after an element "h2c"
)

// value reads byte c of the value of a field the parser reads; c is a valid
// value byte.
func (p *parser) value(c byte) *Error {
	switch p.fld {
	case fContentLength:
		switch {
		case isOWS(c):
			if p.vst == vIn {
				p.vst = vTrail
			}
		case c >= '0' && c <= '9' && p.vst != vTrail:
			d := int64(c - '0')
			if p.cl > (maxChunkSize-d)/10 {
				return errCLValue
			}
			p.cl = p.cl*10 + d
			p.vst = vIn
		default:
			return errCLValue
		}
	case fTransferEncoding:
		const chunked = "chunked"
		switch {
		case isOWS(c):
			if p.vst == vIn {
				p.vst = vTrail
			}
		case p.vst != vTrail && int(p.vIdx) < len(chunked) && lower(c) == chunked[p.vIdx]:
			p.vIdx++
			p.vst = vIn
		default:
			return errTEValue
		}
	case fHost:
		if p.vst == vLead && isOWS(c) {
			return nil
		}
		p.vst = vIn
		if p.hostLen < len(p.host) {
			p.host[p.hostLen] = c
			p.hostLen++
		} else {
			p.hostLong = true
		}
	case fUpgrade:
		return p.upgrade(c)
	}
	return nil
}

// upgrade reads byte c of an Upgrade value, a list of protocols, and refuses
// h2c: h2c ["/" version], in any case.
func (p *parser) upgrade(c byte) *Error {
	const h2c = "h2c"
	switch p.vst {
	case vLead: // before an element
		switch {
		case isOWS(c) || c == ',':
		case lower(c) == h2c[0]:
			p.vst, p.vIdx = vIn, 1
		default:
			p.vst = vOther
		}
	case vIn: // matching h2c
		switch {
		case lower(c) == h2c[p.vIdx]:
			if p.vIdx++; int(p.vIdx) == len(h2c) {
				p.vst = vH2C
			}
		case c == ',':
			p.vst = vLead
		default:
			p.vst = vOther
		}
	case vH2C:
		switch {
		case c == '/' || c == ',':
			return errH2C
		case isOWS(c):
		default:
			p.vst = vOther // "h2cx"
		}
	case vOther:
		if c == ',' {
			p.vst = vLead
		}
	}
	return nil
}

// endField ends a field line at its LF.
func (p *parser) endField() *Error {
	switch p.fld {
	case fContentLength:
		if p.vst == vLead {
			return errCLValue // empty
		}
	case fTransferEncoding:
		if p.vIdx != uint8(len("chunked")) {
			return errTEValue
		}
	case fUpgrade:
		if p.vst == vH2C {
			return errH2C
		}
	case fHost:
		for p.hostLen > 0 && isOWS(p.host[p.hostLen-1]) {
			p.hostLen--
		}
	}
	p.fld = fOther
	return nil
}

// endHead decides how the body of the request whose head ends at offset at
// is framed (RFC 9112 §6.3: chunked, Content-Length, or none for a request).
func (p *parser) endHead(at int) *Error {
	if p.teCount > 0 && p.clCount > 0 {
		return errTEWithCL
	}
	if p.hostCount == 1 && !p.origin && !p.authorityMatchesHost() {
		return errHostMismatch
	}
	p.leadOK = p.post == uint8(len("POST"))
	switch {
	case p.teCount == 1:
		p.startChunk()
	case p.cl > 0:
		p.remaining = uint64(p.cl)
		p.st = sBody
	default:
		p.complete(at)
	}
	return nil
}

// startChunk expects a chunk-size line.
func (p *parser) startChunk() {
	p.st = sChunkSize
	p.n = 0
	p.size, p.digits = 0, 0
}

// chunkExt reads byte c of a chunk extension.
func (p *parser) chunkExt(c byte) *Error {
	switch p.ext {
	case eNameStart:
		switch {
		case isOWS(c):
		case isToken(c):
			p.ext = eName
		default:
			return errChunkExt
		}
	case eName, eValToken:
		switch {
		case isToken(c):
		case isOWS(c):
			if p.ext == eName {
				p.ext = eAfterName
			} else {
				p.ext = eAfterVal
			}
		case c == '=' && p.ext == eName:
			p.ext = eValStart
		case c == ';':
			p.ext = eNameStart
		case c == '\r':
			p.st = sChunkLF
		default:
			return errChunkExt
		}
	case eAfterName:
		switch {
		case isOWS(c):
		case c == '=':
			p.ext = eValStart
		case c == ';':
			p.ext = eNameStart
		default:
			return errChunkExt
		}
	case eValStart:
		switch {
		case isOWS(c):
		case isToken(c):
			p.ext = eValToken
		case c == '"':
			p.ext = eValQuoted
		default:
			return errChunkExt
		}
	case eValQuoted:
		switch {
		case c == '"':
			p.ext = eAfterVal
		case c == '\\':
			p.ext = eQuotedPair
		case !isValue(c):
			return errChunkExt
		}
	case eQuotedPair:
		if !isValue(c) {
			return errChunkExt
		}
		p.ext = eValQuoted
	case eAfterVal:
		switch {
		case isOWS(c):
		case c == ';':
			p.ext = eNameStart
		case c == '\r':
			p.st = sChunkLF
		default:
			return errChunkExt
		}
	}
	return nil
}

// authorityMatchesHost reports whether the authority of an absolute-form
// request-target is the Host value, ignoring case and an explicit default
// port for http. A target that is not absolute-form ("*", or a CONNECT
// authority) has nothing to compare.
func (p *parser) authorityMatchesHost() bool {
	t := p.target[:p.targetLen]
	sep := -1
	for i := 0; i+2 < len(t); i++ {
		if t[i] == ':' {
			if t[i+1] == '/' && t[i+2] == '/' {
				sep = i
			}
			break
		}
		if !isToken(t[i]) {
			break
		}
	}
	if sep < 0 && p.targetLen == len(p.target) {
		return false // cut off before any authority
	}
	if sep <= 0 {
		return true
	}
	scheme, rest := t[:sep], t[sep+3:]
	end := len(rest)
	for i, c := range rest {
		if c == '/' || c == '?' || c == '#' {
			end = i
			break
		}
	}
	if end == len(rest) && p.targetLen == len(p.target) || p.hostLong {
		return false // cut off: longer than any authority compared
	}
	authority, host := rest[:end], p.host[:p.hostLen]
	if len(scheme) == 4 && lower(scheme[0]) == 'h' && lower(scheme[1]) == 't' && lower(scheme[2]) == 't' && lower(scheme[3]) == 'p' {
		authority, host = trimPort80(authority), trimPort80(host)
	}
	if len(authority) != len(host) {
		return false
	}
	for i := range authority {
		if lower(authority[i]) != lower(host[i]) {
			return false
		}
	}
	return true
}

// trimPort80 removes an explicit ":80" from an authority.
func trimPort80(a []byte) []byte {
	if n := len(a); n > 3 && a[n-3] == ':' && a[n-2] == '8' && a[n-1] == '0' {
		return a[:n-3]
	}
	return a
}
