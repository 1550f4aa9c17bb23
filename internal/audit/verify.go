package audit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
)

// ExportFormat names the export file format.
const ExportFormat = "bulwark.dev/audit-export/v1"

// Export is the audit log as `bulwark audit export` writes it: every entry
// and checkpoint exactly as stored, in order, the head, and the audit
// public key (PEM).
type Export struct {
	Format      string            `json:"format"`
	PublicKey   string            `json:"publicKey"`
	Head        json.RawMessage   `json:"head,omitempty"`
	Entries     []json.RawMessage `json:"entries"`
	Checkpoints []json.RawMessage `json:"checkpoints"`
}

// Report is the outcome of a verification.
type Report struct {
	// OK is true when nothing is wrong.
	OK bool `json:"ok"`
	// Entries and Checkpoints count what was checked; LastCheckpoint is
	// the seq of the last valid checkpoint (0: none).
	Entries        int    `json:"entries"`
	Checkpoints    int    `json:"checkpoints"`
	LastCheckpoint uint64 `json:"lastCheckpoint"`
	// BadSeq is the seq of the first bad entry and Problem what is wrong
	// with it, when OK is false.
	BadSeq  uint64 `json:"badSeq,omitempty"`
	Problem string `json:"problem,omitempty"`
	// Problems lists up to maxProblems problems found, first first.
	Problems []string `json:"problems,omitempty"`
	// Key is a fingerprint of the public key the checkpoints were
	// checked with.
	Key string `json:"key"`
}

// maxProblems bounds Report.Problems.
const maxProblems = 10

type problem struct {
	seq uint64
	msg string
}

// ParsePublicKey reads a PEM "PUBLIC KEY" block holding an ECDSA key.
func ParsePublicKey(pemText []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(pemText)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("want a PEM \"PUBLIC KEY\" block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %v", err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("want an ECDSA public key, got %T", k)
	}
	return pub, nil
}

// ParseExport reads an export file, strictly.
func ParseExport(b []byte) (Export, error) {
	var x Export
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&x); err != nil {
		return Export{}, fmt.Errorf("export file: %v", err)
	}
	if dec.More() {
		return Export{}, errors.New("export file: trailing data")
	}
	if x.Format != ExportFormat {
		return Export{}, fmt.Errorf("format: %q: want %q", x.Format, ExportFormat)
	}
	return x, nil
}

// Verify walks the chain of x from seq 1 and checks every entry, the head
// and every checkpoint (signatures with pub). The report names the first
// bad entry; later problems are listed too, up to a bound.
func Verify(x Export, pub *ecdsa.PublicKey) Report {
	rep := Report{Entries: len(x.Entries), Checkpoints: len(x.Checkpoints)}
	if pub != nil {
		rep.Key = keyFingerprint(pub)
	}
	var probs []problem
	add := func(seq uint64, format string, args ...any) {
		probs = append(probs, problem{seq, fmt.Sprintf(format, args...)})
	}

	hashes := make([]string, 0, len(x.Entries))
	isCheckpoint := map[uint64]bool{}
	prev := ""
	chainOK := true
	for i, raw := range x.Entries {
		want := uint64(i + 1)
		var e Entry
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			add(want, "entry %d is unreadable (edited): %v", want, err)
			chainOK = false
			break
		}
		switch {
		case e.Seq > want && seqLater(x.Entries[i+1:], want):
			add(want, "entry %d is out of order: entry %d stands in its place", want, e.Seq)
		case e.Seq > want:
			add(want, "entry %d is missing (deleted): the next entry is %d", want, e.Seq)
		case e.Seq < want:
			add(want, "entry %d is out of order: entry %d stands in its place", want, e.Seq)
		case !bytes.Equal(raw, Canonical(e)):
			add(want, "entry %d was edited: its bytes are not its canonical encoding", want)
		case ComputeHash(e) != e.Hash:
			add(want, "entry %d was edited: its hash does not match its content", want)
		case e.Prev != prev:
			add(want, "entry %d does not follow entry %d: its prev is not that entry's hash (deleted, inserted or reordered)", want, want-1)
		}
		if len(probs) > 0 {
			chainOK = false
			break
		}
		prev = e.Hash
		hashes = append(hashes, e.Hash)
		if e.Action == ActionCheckpoint {
			isCheckpoint[e.Seq] = true
		}
	}
	n := uint64(len(hashes))

	// The head must name the last entry.
	if chainOK {
		var h Head
		switch {
		case len(x.Head) == 0 && n > 0:
			add(n, "the head is missing")
		case len(x.Head) == 0:
		case json.Unmarshal(x.Head, &h) != nil:
			add(n, "the head is unreadable")
		case h.Seq > n:
			add(n+1, "the head names entry %d but the chain ends at %d: entries were deleted (truncation)", h.Seq, n)
		case h.Seq < n:
			add(h.Seq+1, "entry %d is after the head (%d): appended outside the log", h.Seq+1, h.Seq)
		case n > 0 && h.Hash != hashes[n-1]:
			add(n, "the head's hash does not match entry %d", n)
		}
	}

	// Every checkpoint must be signed and match the chain.
	sealed := map[uint64]bool{}
	for i, raw := range x.Checkpoints {
		var cp Checkpoint
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cp); err != nil {
			add(lowest(n, cp.Seq), "checkpoint %d is unreadable: %v", i+1, err)
			continue
		}
		switch {
		case pub == nil || !ecdsa.VerifyASN1(pub, cp.signedDigest(), cp.Signature):
			add(lowest(n+1, cp.Seq), "checkpoint at entry %d: the signature does not verify (forged or rewritten)", cp.Seq)
		case cp.Seq == 0:
			add(1, "checkpoint %d names entry 0", i+1)
		case cp.Seq > n && chainOK:
			add(n+1, "checkpoint at entry %d, but the chain ends at %d: entries were deleted (truncation)", cp.Seq, n)
		case cp.Seq > n:
			// the chain broke before: already reported
		case hashes[cp.Seq-1] != cp.Hash:
			add(cp.Seq, "entry %d does not match the checkpoint that sealed it (rewritten history)", cp.Seq)
		case !isCheckpoint[cp.Seq]:
			add(cp.Seq, "entry %d is not a checkpoint entry, but a checkpoint names it", cp.Seq)
		default:
			sealed[cp.Seq] = true
			rep.LastCheckpoint = max(rep.LastCheckpoint, cp.Seq)
		}
	}
	for seq := range isCheckpoint {
		if !sealed[seq] && !hasProblemAt(probs, seq) {
			add(seq, "checkpoint entry %d has no valid signed checkpoint (deleted)", seq)
		}
	}

	if len(probs) == 0 {
		rep.OK = true
		return rep
	}
	slices.SortStableFunc(probs, func(a, b problem) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	rep.BadSeq, rep.Problem = probs[0].seq, probs[0].msg
	for i, p := range probs {
		if i == maxProblems {
			break
		}
		rep.Problems = append(rep.Problems, p.msg)
	}
	return rep
}

// seqLater reports whether an entry of raws has seq.
func seqLater(raws []json.RawMessage, seq uint64) bool {
	for _, raw := range raws {
		var e struct {
			Seq uint64 `json:"seq"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Seq == seq {
			return true
		}
	}
	return false
}

// lowest returns the smaller non-zero of a and b.
func lowest(a, b uint64) uint64 {
	if b == 0 || (a != 0 && a < b) {
		return max(a, 1)
	}
	return b
}

func hasProblemAt(ps []problem, seq uint64) bool {
	for _, p := range ps {
		if p.seq == seq {
			return true
		}
	}
	return false
}

// VerifyExport verifies an export file. With pinned (a PEM public key)
// the checkpoints must be signed by that key; without it the key in the
// file is trusted, and trustedFile says so.
func VerifyExport(file, pinned []byte) (rep Report, trustedFile bool, err error) {
	x, err := ParseExport(file)
	if err != nil {
		return Report{}, false, err
	}
	var pub *ecdsa.PublicKey
	if len(pinned) > 0 {
		if pub, err = ParsePublicKey(pinned); err != nil {
			return Report{}, false, fmt.Errorf("key: %w", err)
		}
	} else {
		if pub, err = ParsePublicKey([]byte(x.PublicKey)); err != nil {
			return Report{}, false, fmt.Errorf("publicKey: %w", err)
		}
		trustedFile = true
	}
	return Verify(x, pub), trustedFile, nil
}

// Continues checks that cur continues prev, an earlier export of the same
// log: every entry and checkpoint of prev is in cur, byte for byte, at the
// same place, and both carry the same public key. It detects what Verify
// alone cannot: truncation after the last checkpoint, and a history
// rewritten by someone holding the store and the audit key. It returns the
// report of the comparison, with the first differing entry.
func Continues(prev, cur Export) Report {
	rep := Report{OK: true, Entries: len(cur.Entries), Checkpoints: len(cur.Checkpoints)}
	fail := func(seq uint64, format string, args ...any) Report {
		rep.OK, rep.BadSeq, rep.Problem = false, seq, fmt.Sprintf(format, args...)
		rep.Problems = []string{rep.Problem}
		return rep
	}
	for i, raw := range prev.Entries {
		seq := uint64(i + 1)
		if i >= len(cur.Entries) {
			return fail(seq, "entry %d of the previous export is gone: the log was truncated to %d entries", seq, len(cur.Entries))
		}
		if !bytes.Equal(raw, cur.Entries[i]) {
			return fail(seq, "entry %d differs from the previous export: history was rewritten", seq)
		}
	}
	have := map[string]bool{}
	for _, raw := range cur.Checkpoints {
		have[string(raw)] = true
	}
	for _, raw := range prev.Checkpoints {
		if !have[string(raw)] {
			var cp Checkpoint
			_ = json.Unmarshal(raw, &cp)
			return fail(max(cp.Seq, 1), "the checkpoint at entry %d of the previous export is gone or changed", cp.Seq)
		}
	}
	if prev.PublicKey != cur.PublicKey {
		return fail(1, "the audit public key differs from the previous export's: checkpoints were signed by another key")
	}
	return rep
}
