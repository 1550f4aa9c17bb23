package audit_test

// Attack tests of the audit log: crafted exports, every single-byte edit,
// read ranges an operator chooses, and a flood of failures from many
// addresses.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/audit"
)

// TestAttackEveryByteEditIsDetected flips each byte of each stored entry
// in turn: verification must fail, naming that entry, and never panic.
func TestAttackEveryByteEditIsDetected(t *testing.T) {
	f := newFixture(t, 3)
	f.appendN(t, 5) // 5 entries and checkpoints: 7 entries in all
	x := f.export(t)
	pub := f.log.PublicKey()
	if rep := audit.Verify(x, pub); !rep.OK {
		t.Fatalf("untouched log: got %+v, want OK", rep)
	}
	edits := 0
	for i := range x.Entries {
		for j := range x.Entries[i] {
			for _, flip := range []byte{0x01, 0x20} {
				y := mutate(x, func(y *audit.Export) { y.Entries[i][j] ^= flip })
				rep := audit.Verify(y, pub)
				edits++
				if rep.OK || rep.BadSeq != uint64(i+1) {
					t.Fatalf("entry %d byte %d ^ %#x (%q): got OK=%v BadSeq=%d (%s), want a failure at %d",
						i+1, j, flip, y.Entries[i], rep.OK, rep.BadSeq, rep.Problem, i+1)
				}
			}
		}
	}
	t.Logf("%d single-byte edits, every one detected at its entry", edits)
}

// TestAttackCraftedExportFiles feeds VerifyExport hostile files: each is
// refused with an error or a failed report, never a panic or a pass.
func TestAttackCraftedExportFiles(t *testing.T) {
	f := newFixture(t, 2)
	f.appendN(t, 3)
	good, err := json.Marshal(f.export(t))
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := f.log.PublicKeyPEM()
	pub, _ := json.Marshal(pubPEM)
	file := func(rest string) []byte {
		return []byte(`{"format":"` + audit.ExportFormat + `","publicKey":` + string(pub) + `,` + rest + `}`)
	}
	tests := []struct {
		name string
		file []byte
	}{
		{"empty", nil},
		{"not_json", []byte("\x00\xff garbage")},
		{"deeply_nested", []byte(strings.Repeat("[", 100000))},
		{"deeply_nested_entry", file(`"entries":[` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `],"checkpoints":[]`)},
		{"trailing_data", append(append([]byte{}, good...), []byte(` {"more":1}`)...)},
		{"unknown_field", file(`"entries":[],"checkpoints":[],"extra":1`)},
		{"wrong_format", []byte(`{"format":"other","publicKey":"","entries":[],"checkpoints":[]}`)},
		{"no_key", []byte(`{"format":"` + audit.ExportFormat + `","publicKey":"","entries":[],"checkpoints":[]}`)},
		{"rsa_key", []byte(`{"format":"` + audit.ExportFormat + `","publicKey":` + rsaPublicKeyJSON + `,"entries":[],"checkpoints":[]}`)},
		{"seq_overflow", file(`"entries":[{"seq":18446744073709551616}],"checkpoints":[]`)},
		{"seq_max", file(`"entries":[{"seq":18446744073709551615}],"checkpoints":[]`)},
		{"seq_negative", file(`"entries":[{"seq":-1}],"checkpoints":[]`)},
		{"duplicate_seqs", file(`"entries":[{"seq":1},{"seq":1}],"checkpoints":[]`)},
		{"null_entries", file(`"entries":[null,5,"x"],"checkpoints":[null],"head":null`)},
		{"missing_fields", file(`"entries":[{}],"checkpoints":[{}]`)},
		{"head_string", file(`"head":"x","entries":[],"checkpoints":[]`)},
		{"head_ahead", file(`"head":{"seq":5,"hash":"x"},"entries":[],"checkpoints":[]`)},
		{"checkpoint_max_seq", file(`"entries":[],"checkpoints":[{"seq":18446744073709551615,"hash":"","time":"","keyId":"","signature":""}]`)},
		{"checkpoint_bad_signature", file(`"entries":[],"checkpoints":[{"seq":1,"hash":"","time":"","keyId":"","signature":"AAAA"}]`)},
		{"checkpoint_wrong_types", file(`"entries":[],"checkpoints":[{"seq":"1","signature":7}]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, _, err := audit.VerifyExport(tt.file, nil)
			if err == nil && rep.OK {
				t.Fatalf("VerifyExport(%.80q): got OK %+v, want an error or a failed report", tt.file, rep)
			}
			if err == nil && rep.Problem == "" {
				t.Errorf("failed report names no problem: %+v", rep)
			}
		})
	}
	// The same file with a pinned key of another kind is refused.
	if _, _, err := audit.VerifyExport(good, []byte(rsaPublicKeyPEM)); err == nil {
		t.Error("VerifyExport with an RSA --key: got no error, want one")
	}
}

// rsaPublicKeyPEM is an RSA public key (PEM): a key of the wrong type.
var rsaPublicKeyPEM = func() string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}()

var rsaPublicKeyJSON = func() string {
	b, _ := json.Marshal(rsaPublicKeyPEM)
	return string(b)
}()

// TestAttackCheckpointSignatureIsDomainSeparated: what the audit key signs
// is a digest over a domain-tagged encoding, so a checkpoint signature is
// not a signature over the bare fields (nor over anything else the same
// key might sign).
func TestAttackCheckpointSignatureIsDomainSeparated(t *testing.T) {
	cp := audit.Checkpoint{Seq: 7, Hash: strings.Repeat("a", 64), Time: "2026-03-01T12:00:00Z", KeyID: "audit-checkpoint"}
	d := audit.CheckpointDigest(cp)
	bare, _ := json.Marshal(struct {
		Seq   uint64 `json:"seq"`
		Hash  string `json:"hash"`
		Time  string `json:"time"`
		KeyID string `json:"keyId"`
	}{cp.Seq, cp.Hash, cp.Time, cp.KeyID})
	for _, other := range [][]byte{audit.CheckpointDigest(audit.Checkpoint{}), bare} {
		if bytes.Equal(d, other) {
			t.Fatalf("checkpoint digest %x equals a digest of other content", d)
		}
	}
	cp2 := cp
	cp2.Seq = 8
	if bytes.Equal(d, audit.CheckpointDigest(cp2)) {
		t.Fatal("checkpoint digest does not cover seq")
	}
}

// TestAttackRangeOutOfBounds: `after` is the operator's; a value at or
// past the head (up to the largest uint64, where after+1 wraps to 0)
// returns no entries, not the start of the log.
func TestAttackRangeOutOfBounds(t *testing.T) {
	f := newFixture(t, 1000)
	f.appendN(t, 5)
	for _, after := range []uint64{5, 6, 1 << 40, math.MaxUint64 - 1, math.MaxUint64} {
		got, head, err := f.log.Range(context.Background(), after, 1000)
		if err != nil {
			t.Fatalf("Range(%d): %v", after, err)
		}
		if len(got) != 0 {
			t.Errorf("Range(%d) with head %d: got %d entries (first seq %d), want none", after, head.Seq, len(got), got[0].Seq)
		}
	}
	got, _, err := f.log.Range(context.Background(), 3, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Seq != 4 || got[1].Seq != 5 {
		t.Errorf("Range(3): got %d entries, want seqs 4 and 5", len(got))
	}
}

// TestAttackFailureFloodFromManyAddresses: a flood of failed
// authentications from distinct ports of one address is one entry; from
// 100,000 distinct addresses (loopback has 16M, IPv6 more) with distinct
// claimed identities it is at most MaxFailureKeys+1 entries per period,
// and no failure goes uncounted.
func TestAttackFailureFloodFromManyAddresses(t *testing.T) {
	rec := &recorder{}
	a, err := audit.NewAggregator(audit.AggregatorConfig{Log: rec, MaxFailureKeys: 64})
	if err != nil {
		t.Fatal(err)
	}
	for port := range 50000 {
		a.Failure(audit.FailureOperator, fmt.Sprintf("127.0.0.1:%d", 1024+port%60000), "", "tls: bad certificate")
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.entries); got != 1 || rec.entries[0].Count != 50000 || rec.entries[0].Source != "127.0.0.1" {
		t.Fatalf("50000 failures from one address: got %d entries (%+v), want 1 counting 50000", got, rec.entries)
	}

	rec.entries = nil
	const n = 100000
	for i := range n {
		addr := fmt.Sprintf("127.%d.%d.%d:4000", i>>16&0xff, i>>8&0xff, i&0xff)
		a.Failure(audit.FailureOperator, addr, fmt.Sprintf("spiffe://evil/%d\n\x1b[31m%s", i, strings.Repeat("x", 4096)), "bad")
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.entries); got > 64+1 {
		t.Fatalf("%d distinct sources: got %d entries in one period, want at most 65", n, got)
	}
	var total int64
	for _, e := range rec.entries {
		total += e.Count
		if len(e.Actor) > 256 || len(e.Detail) > 512 {
			t.Errorf("entry fields not bounded: actor %d bytes, detail %d bytes", len(e.Actor), len(e.Detail))
		}
	}
	if total != n {
		t.Errorf("counted failures: got %d, want %d", total, n)
	}
}
