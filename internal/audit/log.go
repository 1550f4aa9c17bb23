package audit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/clock"
	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Defaults of Config.
const (
	// DefaultKeyID is the key manager id of the audit key when
	// Config.KeyID is "".
	DefaultKeyID = "audit-checkpoint"
	// DefaultCheckpointEvery is Config.CheckpointEvery when it is zero.
	DefaultCheckpointEvery = 1000
	// DefaultCheckpointInterval is Config.CheckpointInterval when it is
	// zero.
	DefaultCheckpointInterval = time.Minute
	// maxAppendRetries bounds the retries of an Append that keeps
	// conflicting with other writers (other replicas).
	maxAppendRetries = 32
	// maxDetail bounds Entry.Detail, maxField every other text field.
	maxDetail = 512
	maxField  = 256
)

// Errors of the audit log.
var (
	// ErrUnavailable: the log could not be read or written. A write that
	// must be audited is refused with it, and nothing is changed.
	ErrUnavailable = errors.New("audit log unavailable")
)

// Config configures Open.
type Config struct {
	// Store keeps the log. Required.
	Store store.Store
	// Keys keeps the audit key (ECDSA P-256) under KeyID; Open creates it
	// when missing. Required.
	Keys keymanager.KeyManager
	// KeyID of the audit key. Default: "audit-checkpoint".
	KeyID string
	// CheckpointEvery seals the chain with a signed checkpoint after this
	// many entries. Default: 1000. Negative is an error.
	CheckpointEvery int
	// CheckpointInterval seals the chain (when it grew) this long after
	// the last checkpoint, checked by Run. Default: 1m. Negative is an
	// error.
	CheckpointInterval time.Duration
	// Clock stamps entries and drives checkpoints. Default: the wall clock.
	Clock clock.Clock
	// Logger, default discard.
	Logger *slog.Logger
}

// Log is the audit log of one store. It is safe for concurrent use;
// appends from one process are serialized, appends from several processes
// (replicas) meet in the store's compare-and-swap on the head.
type Log struct {
	st       store.Store
	signer   crypto.Signer
	pub      *ecdsa.PublicKey
	keyID    string
	every    int
	interval time.Duration
	clock    clock.Clock
	logger   *slog.Logger

	// mu serializes prepare-and-commit in this process.
	mu sync.Mutex
}

// Open returns the Log of cfg.Store, creating the audit key if needed.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("audit: store is required")
	case cfg.Keys == nil:
		return nil, errors.New("audit: keys are required")
	case cfg.CheckpointEvery < 0:
		return nil, fmt.Errorf("audit: CheckpointEvery: negative count %d", cfg.CheckpointEvery)
	case cfg.CheckpointInterval < 0:
		return nil, fmt.Errorf("audit: CheckpointInterval: negative duration %v", cfg.CheckpointInterval)
	}
	if cfg.KeyID == "" {
		cfg.KeyID = DefaultKeyID
	}
	if cfg.CheckpointEvery == 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	signer, err := cfg.Keys.GetKey(ctx, cfg.KeyID)
	if errors.Is(err, keymanager.ErrNotFound) {
		signer, err = cfg.Keys.GenerateKey(ctx, cfg.KeyID)
	}
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit key: want an ECDSA key, got %T", signer.Public())
	}
	return &Log{
		st: cfg.Store, signer: signer, pub: pub, keyID: cfg.KeyID, every: cfg.CheckpointEvery,
		interval: cfg.CheckpointInterval, clock: clock.OrReal(cfg.Clock), logger: telemetry.OrDiscard(cfg.Logger),
	}, nil
}

// PublicKey is the audit key's public half, which verifies checkpoints.
func (l *Log) PublicKey() *ecdsa.PublicKey { return l.pub }

// PublicKeyPEM is PublicKey as a PEM "PUBLIC KEY" block.
func (l *Log) PublicKeyPEM() string { return publicKeyPEM(l.pub) }

func publicKeyPEM(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// Pending is what Prepare made: the comparison and writes that append its
// entries, to join to the caller's store transaction.
type Pending struct {
	// Cmps holds the compare-and-swap on the head.
	Cmps []store.Cmp
	// Ops writes the entries, a checkpoint when one is due, and the new
	// head.
	Ops []store.Op
	// Entries are the entries as they will be stored.
	Entries []Entry
}

// Prepare returns the store writes that append entries after the current
// head. The caller commits them in one store.Txn with its own writes; on
// store.ErrConflict it prepares again. Most callers want Txn or Append,
// which also serialize writers of this process.
func (l *Log) Prepare(ctx context.Context, entries ...Entry) (Pending, error) {
	head, rev, err := l.head(ctx)
	if err != nil {
		return Pending{}, err
	}
	now := l.clock.Now().UTC()
	p := Pending{Cmps: []store.Cmp{{Key: HeadKey, ModRevision: rev}}}
	for _, e := range entries {
		l.chain(&head, &p, e, now)
	}
	if len(entries) > 0 && head.Seq-head.Checkpoint >= uint64(l.every) {
		if err := l.checkpoint(&head, &p, now); err != nil {
			return Pending{}, err
		}
	}
	b, err := json.Marshal(head)
	if err != nil {
		return Pending{}, err
	}
	p.Ops = append(p.Ops, store.Op{Key: HeadKey, Value: b})
	return p, nil
}

// chain appends e to p after head and moves head on.
func (l *Log) chain(head *Head, p *Pending, e Entry, now time.Time) {
	e.Seq = head.Seq + 1
	e.Time = now.Format(time.RFC3339Nano)
	e.Actor = clip(e.Actor, maxField)
	e.Action = clip(e.Action, maxField)
	e.Kind, e.Namespace, e.Name = clip(e.Kind, maxField), clip(e.Namespace, maxField), clip(e.Name, maxField)
	e.Source, e.Outcome = clip(e.Source, maxField), clip(e.Outcome, maxField)
	e.Detail = clip(e.Detail, maxDetail)
	if e.Count == 0 {
		e.Count = 1
	}
	e.Prev = head.Hash
	e.Hash = ComputeHash(e)
	head.Seq, head.Hash = e.Seq, e.Hash
	p.Entries = append(p.Entries, e)
	p.Ops = append(p.Ops, store.Op{Key: EntryKey(e.Seq), Value: Canonical(e)})
}

// checkpoint appends a checkpoint entry and its signed record.
func (l *Log) checkpoint(head *Head, p *Pending, now time.Time) error {
	sealed := head.Seq - head.Checkpoint
	l.chain(head, p, Entry{
		Actor: ActorSystem, Action: ActionCheckpoint, Outcome: OutcomeOK,
		Detail: fmt.Sprintf("seals entries %d to %d", head.Checkpoint+1, head.Seq), Count: int64(sealed),
	}, now)
	cp := Checkpoint{Seq: head.Seq, Hash: head.Hash, Time: now.Format(time.RFC3339Nano), KeyID: l.keyID}
	sig, err := l.signer.Sign(rand.Reader, cp.signedDigest(), crypto.SHA256)
	if err != nil {
		return fmt.Errorf("%w: sign checkpoint: %v", ErrUnavailable, err)
	}
	cp.Signature = sig
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	p.Ops = append(p.Ops, store.Op{Key: CheckpointKey(cp.Seq), Value: b})
	head.Checkpoint, head.CheckpointTime = head.Seq, cp.Time
	return nil
}

// head returns the stored head and its ModRevision (0: none yet).
func (l *Log) head(ctx context.Context) (Head, int64, error) {
	kv, err := l.st.Get(ctx, HeadKey)
	if errors.Is(err, store.ErrNotFound) {
		return Head{}, 0, nil
	}
	if err != nil {
		return Head{}, 0, fmt.Errorf("%w: read head: %v", ErrUnavailable, err)
	}
	var h Head
	if err := json.Unmarshal(kv.Value, &h); err != nil {
		return Head{}, 0, fmt.Errorf("%w: head is unreadable: %v", ErrUnavailable, err)
	}
	return h, kv.ModRevision, nil
}

// Txn commits cmps and ops together with the audit entries, in one store
// transaction: the write and its audit trail land together or not at all.
// It returns store.ErrConflict (nothing written) when one of cmps failed
// or another writer moved the head: the caller plans again. Any other
// failure wraps ErrUnavailable.
func (l *Log) Txn(ctx context.Context, cmps []store.Cmp, ops []store.Op, entries ...Entry) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, err := l.Prepare(ctx, entries...)
	if err != nil {
		return 0, err
	}
	rev, err := l.st.Txn(ctx, append(append([]store.Cmp{}, cmps...), p.Cmps...), append(append([]store.Op{}, ops...), p.Ops...))
	switch {
	case errors.Is(err, store.ErrConflict):
		return 0, err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return 0, err
	case err != nil:
		return 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return rev, nil
}

// Append appends entries on their own, retrying (a bounded number of
// times) when another writer moved the head.
func (l *Log) Append(ctx context.Context, entries ...Entry) error {
	if len(entries) == 0 {
		return nil
	}
	for attempt := 0; ; attempt++ {
		_, err := l.Txn(ctx, nil, nil, entries...)
		if errors.Is(err, store.ErrConflict) && attempt < maxAppendRetries {
			continue
		}
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("%w: %d conflicting appends in a row", ErrUnavailable, attempt+1)
		}
		return err
	}
}

// Checkpoint seals the chain now if it grew since the last checkpoint.
func (l *Log) Checkpoint(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		err := l.checkpointOnce(ctx)
		if errors.Is(err, store.ErrConflict) && attempt < maxAppendRetries {
			continue
		}
		return err
	}
}

func (l *Log) checkpointOnce(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	head, rev, err := l.head(ctx)
	if err != nil {
		return err
	}
	if head.Seq == head.Checkpoint {
		return nil
	}
	p := Pending{Cmps: []store.Cmp{{Key: HeadKey, ModRevision: rev}}}
	if err := l.checkpoint(&head, &p, l.clock.Now().UTC()); err != nil {
		return err
	}
	b, err := json.Marshal(head)
	if err != nil {
		return err
	}
	p.Ops = append(p.Ops, store.Op{Key: HeadKey, Value: b})
	_, err = l.st.Txn(ctx, p.Cmps, p.Ops)
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// Run seals the chain with a checkpoint every CheckpointInterval (when it
// grew), until ctx is done; it then returns nil. A failed checkpoint is
// logged and tried again at the next interval.
func (l *Log) Run(ctx context.Context) error {
	for {
		t := l.clock.NewTimer(l.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
		if err := l.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			l.logger.Warn("audit checkpoint failed, will retry", telemetry.KeyErr, err)
		}
	}
}

// Head returns the current head.
func (l *Log) Head(ctx context.Context) (Head, error) {
	h, _, err := l.head(ctx)
	return h, err
}

// Range returns the entries after+1 to after+limit that exist (up to the
// head), oldest first, and the head they were read against. Each entry is
// read by key, so the cost does not grow with the log.
func (l *Log) Range(ctx context.Context, after uint64, limit int) ([]Entry, Head, error) {
	head, err := l.Head(ctx)
	if err != nil {
		return nil, head, err
	}
	if after >= head.Seq || limit < 1 {
		// Nothing after it (and after+1 must not wrap around to 0).
		return nil, head, nil
	}
	var out []Entry
	for seq := after + 1; seq <= head.Seq && seq-after <= uint64(limit); seq++ {
		kv, err := l.st.Get(ctx, EntryKey(seq))
		if errors.Is(err, store.ErrNotFound) {
			continue // reported by Verify; the reader still sees the rest
		}
		if err != nil {
			return nil, head, fmt.Errorf("%w: read entry %d: %v", ErrUnavailable, seq, err)
		}
		var e Entry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			e = Entry{Seq: seq, Action: "unreadable", Detail: "entry is unreadable: run bulwark audit verify"}
		}
		out = append(out, e)
	}
	return out, head, nil
}

// Tail returns the last n entries, oldest first.
func (l *Log) Tail(ctx context.Context, n int) ([]Entry, Head, error) {
	head, err := l.Head(ctx)
	if err != nil {
		return nil, head, err
	}
	after := uint64(0)
	if head.Seq > uint64(n) {
		after = head.Seq - uint64(n)
	}
	return l.Range(ctx, after, n)
}

// Export returns the whole chain, its checkpoints, head and the audit
// public key, for offline verification (VerifyExport). It is a consistent
// snapshot: the head is read before and after the entries and
// checkpoints, and the reads are repeated when an append came between.
func (l *Log) Export(ctx context.Context) (Export, error) {
	for attempt := 0; ; attempt++ {
		x, consistent, err := l.exportOnce(ctx)
		if err != nil || consistent {
			return x, err
		}
		if attempt == maxAppendRetries {
			return Export{}, fmt.Errorf("%w: the log kept changing during %d reads", ErrUnavailable, attempt+1)
		}
	}
}

func (l *Log) exportOnce(ctx context.Context) (Export, bool, error) {
	x := Export{Format: ExportFormat, PublicKey: l.PublicKeyPEM()}
	before, err := l.st.Get(ctx, HeadKey)
	switch {
	case err == nil:
		x.Head = before.Value
	case !errors.Is(err, store.ErrNotFound):
		return Export{}, false, fmt.Errorf("%w: read head: %v", ErrUnavailable, err)
	}
	entries, _, err := l.st.List(ctx, EntryPrefix)
	if err != nil {
		return Export{}, false, fmt.Errorf("%w: list entries: %v", ErrUnavailable, err)
	}
	cps, _, err := l.st.List(ctx, CheckpointPrefix)
	if err != nil {
		return Export{}, false, fmt.Errorf("%w: list checkpoints: %v", ErrUnavailable, err)
	}
	after, err := l.st.Get(ctx, HeadKey)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return Export{}, false, fmt.Errorf("%w: read head: %v", ErrUnavailable, err)
	}
	if after.ModRevision != before.ModRevision {
		return Export{}, false, nil
	}
	x.Entries = make([]json.RawMessage, len(entries))
	for i, e := range entries {
		x.Entries[i] = e.Value
	}
	x.Checkpoints = make([]json.RawMessage, len(cps))
	for i, c := range cps {
		x.Checkpoints[i] = c.Value
	}
	return x, true, nil
}

// Verify checks the chain in the store with the log's own key.
func (l *Log) Verify(ctx context.Context) (Report, error) {
	x, err := l.Export(ctx)
	if err != nil {
		return Report{}, err
	}
	return Verify(x, l.pub), nil
}

// clip cuts s to at most n bytes without splitting a UTF-8 sequence.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// keyFingerprint is the hex SHA-256 of a public key's DER, for reports.
func keyFingerprint(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return fmt.Sprintf("%x", sum[:8])
}
