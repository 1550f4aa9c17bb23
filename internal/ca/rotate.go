package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/keymanager"
	"github.com/bulwarkmesh/bulwark/internal/store"
	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// Root rotation runs in phases, each one compare-and-swap write of the
// records, so that any control plane (after a restart, or another replica)
// resumes where the last one stopped:
//
//	""         one root; the intermediate under it signs.
//	prepared   PrepareRoot: a new root is generated and added to the bundle;
//	           the old intermediate still signs.
//	activated  ActivateRoot: a new intermediate under the new root signs;
//	           the old root stays in the bundle, so SVIDs issued before
//	           keep verifying until they expire.
//	""         RetireRoot (not before RetireAfter, the longest lifetime of
//	           an SVID issued under the old root): the old root leaves the
//	           bundle and its keys are deleted.
//
// What each step waits for (every proxy ACKing the new bundle, every proxy
// holding a new-chain SVID) is decided by package ca/rotation; this file
// only keeps the CA consistent.

// Phase is the phase of a root rotation.
type Phase string

// Phases of a root rotation.
const (
	PhaseNone      Phase = ""
	PhasePrepared  Phase = "prepared"
	PhaseActivated Phase = "activated"
)

// Errors of rotation.
var (
	// ErrRotationInProgress: a root rotation is already under way.
	ErrRotationInProgress = errors.New("ca: a root rotation is in progress")
	// ErrWrongPhase: the operation does not apply to the current phase.
	ErrWrongPhase = errors.New("ca: wrong rotation phase")
	// ErrTooEarly: the old root cannot be retired yet, SVIDs issued under
	// it may still be valid.
	ErrTooEarly = errors.New("ca: too early to retire the old root")
)

// retireSkew is added to the SVID lifetime before an old root may go: clock
// skew between control planes, and the time a replica takes to see the
// activation (until then it still signs under the old root).
const retireSkew = 30 * time.Second

// rotationRecord is the stored state of root rotation and the bundle's
// version.
type rotationRecord struct {
	// BundleVersion grows by one whenever the set of roots changes.
	BundleVersion int64 `json:"bundleVersion"`
	Phase         Phase `json:"phase,omitempty"`
	// Root is the bundle's second root: the new one (prepared) or the
	// retiring one (activated).
	Root *record `json:"root,omitempty"`
	// OldIntermediateKeyID is the key of the intermediate replaced at
	// activation, deleted at retirement.
	OldIntermediateKeyID string    `json:"oldIntermediateKeyID,omitempty"`
	Started              time.Time `json:"started,omitzero"`
	PhaseSince           time.Time `json:"phaseSince,omitzero"`
	// RetireAfter is when the old root may leave the bundle.
	RetireAfter time.Time `json:"retireAfter,omitzero"`
}

// bundleVersion is the version of the bundle: 1 before any rotation.
func (r rotationRecord) bundleVersion() int64 { return max(r.BundleVersion, 1) }

// Reload reads the CA's records again, all at one store revision, and makes
// them current. A control plane calls it when the records change (another
// replica rotated). On error the current generation stays in force.
func (c *CA) Reload(ctx context.Context) error {
	for {
		// Install what was read only over the generation current before
		// the read: a Reload that read older records while another one
		// installed newer ones reads again, so the CA never goes back.
		prev := c.cur.Load()
		g, err := c.read(ctx, prev)
		if err != nil {
			return err
		}
		if g == prev {
			return nil
		}
		if c.cur.CompareAndSwap(prev, g) {
			if prev != nil && !sameGeneration(prev, g) {
				c.logger.Info("workload ca changed", telemetry.KeyPhase, string(g.rotation.Phase),
					telemetry.KeySerial, g.intermediate.cert.SerialNumber.Text(16), telemetry.KeyVersion, g.rotation.bundleVersion())
			}
			return nil
		}
	}
}

// read reads the CA's records at one store revision. It returns prev when
// they are those of prev.
func (c *CA) read(ctx context.Context, prev *generation) (*generation, error) {
	kvs, _, err := c.custody.store.List(ctx, prefixWorkload)
	if err != nil {
		return nil, fmt.Errorf("reload workload ca: %w", err)
	}
	byKey := map[string]store.KV{}
	for _, kv := range kvs {
		byKey[kv.Key] = kv
	}
	rootKV, ok := byKey[keyWorkloadRoot]
	if !ok {
		return nil, fmt.Errorf("reload workload ca: %w: %s is missing", ErrCorruptRecord, keyWorkloadRoot)
	}
	interKV, ok := byKey[keyWorkloadIntermediate]
	if !ok {
		return nil, fmt.Errorf("reload workload ca: %w: %s is missing", ErrCorruptRecord, keyWorkloadIntermediate)
	}
	if prev != nil && prev.root.rev == rootKV.ModRevision && prev.intermediate.rev == interKV.ModRevision &&
		prev.rotationRev == byKey[keyWorkloadRotation].ModRevision {
		return prev, nil // unchanged: do not fetch the keys again
	}
	now := c.clock.Now()
	root, err := c.custody.loadKV(ctx, c.rootSpec(now), rootKV)
	if err != nil {
		return nil, fmt.Errorf("reload workload ca: %w", err)
	}
	inter, err := c.custody.loadKV(ctx, c.intermediateSpec(root, now), interKV)
	if err != nil {
		return nil, fmt.Errorf("reload workload ca: %w", err)
	}
	g := &generation{root: root, intermediate: inter}
	if kv, ok := byKey[keyWorkloadRotation]; ok {
		if err := json.Unmarshal(kv.Value, &g.rotation); err != nil {
			return nil, fmt.Errorf("reload workload ca: %w %s: %v", ErrCorruptRecord, keyWorkloadRotation, err)
		}
		g.rotationRev = kv.ModRevision
		if g.other, err = c.checkRotation(g); err != nil {
			return nil, fmt.Errorf("reload workload ca: %w %s: %v", ErrCorruptRecord, keyWorkloadRotation, err)
		}
	}
	return g, nil
}

// sameGeneration reports whether a and b hold the same records.
func sameGeneration(a, b *generation) bool {
	return a.root.rev == b.root.rev && a.intermediate.rev == b.intermediate.rev && a.rotationRev == b.rotationRev
}

// checkRotation checks a rotation record against the root and returns its
// second root, if any.
func (c *CA) checkRotation(g *generation) (*x509.Certificate, error) {
	r := g.rotation
	switch r.Phase {
	case PhaseNone:
		if r.Root != nil {
			return nil, errors.New("a second root without a rotation")
		}
		return nil, nil
	case PhasePrepared, PhaseActivated:
	default:
		return nil, fmt.Errorf("unknown phase %q", r.Phase)
	}
	if r.Root == nil {
		return nil, fmt.Errorf("phase %s without a second root", r.Phase)
	}
	cert, err := parseRecordCert(*r.Root)
	if err != nil {
		return nil, fmt.Errorf("root: %v", err)
	}
	if err := checkCA(cert); err != nil {
		return nil, fmt.Errorf("root: %v", err)
	}
	if err := checkWorkloadRoot(cert, c.td); err != nil {
		return nil, fmt.Errorf("root: %v", err)
	}
	if publicKeysEqual(cert.PublicKey, g.root.cert.PublicKey) {
		return nil, errors.New("root: same key as the signing root")
	}
	// RetireRoot deletes the keys an activated record names: never one a
	// record in force refers to.
	inUse := []string{g.root.keyID, g.intermediate.keyID}
	if err := keymanager.ValidateID(r.Root.KeyID); err != nil || slices.Contains(inUse, r.Root.KeyID) {
		return nil, fmt.Errorf("root: key id %q is invalid or in use", r.Root.KeyID)
	}
	if r.Phase == PhaseActivated {
		if err := keymanager.ValidateID(r.OldIntermediateKeyID); err != nil || slices.Contains(inUse, r.OldIntermediateKeyID) {
			return nil, fmt.Errorf("old intermediate key id %q is invalid or in use", r.OldIntermediateKeyID)
		}
		if r.RetireAfter.IsZero() {
			return nil, errors.New("activated without a retire time")
		}
	}
	return cert, nil
}

// Rotation describes the state of the workload CA for `bulwark ca status`.
type Rotation struct {
	Phase         Phase
	BundleVersion int64
	// Started and PhaseSince are zero outside a root rotation.
	Started, PhaseSince time.Time
	// RetireAfter is when the old root may go (activated phase only).
	RetireAfter time.Time
	// Roots are the bundle's roots; Intermediate signs now.
	Roots        []*x509.Certificate
	SigningRoot  *x509.Certificate
	Intermediate *x509.Certificate
}

// Rotation returns the current state of the workload CA.
func (c *CA) Rotation() Rotation {
	g := c.cur.Load()
	return Rotation{
		Phase: g.rotation.Phase, BundleVersion: g.rotation.bundleVersion(),
		Started: g.rotation.Started, PhaseSince: g.rotation.PhaseSince, RetireAfter: g.rotation.RetireAfter,
		Roots: g.bundle(), SigningRoot: g.root.cert, Intermediate: g.intermediate.cert,
	}
}

// PrepareRoot starts a root rotation: it generates a new root and adds it to
// the bundle. The current intermediate keeps signing.
func (c *CA) PrepareRoot(ctx context.Context) error {
	return c.prepare(ctx, func(now time.Time) (*authority, error) {
		return c.generate(ctx, keyPrefixWorkloadRoot, func(signer crypto.Signer) (*x509.Certificate, error) {
			tmpl, err := workloadRootTemplate(signer.Public(), c.td, now, c.rootTTL)
			if err != nil {
				return nil, err
			}
			cert, err := sign(tmpl, tmpl, signer.Public(), signer)
			signed(c.signed, SignatureRoot, err)
			return cert, err
		})
	})
}

// PrepareRootFrom starts a root rotation to an operator's own root: cert
// and its key (ECDSA P-256). The root must be a self-signed CA certificate
// whose only URI SAN is the trust domain's SPIFFE ID, valid now, and allowed
// to sign an intermediate. The key goes into the key manager.
func (c *CA) PrepareRootFrom(ctx context.Context, cert *x509.Certificate, key crypto.Signer) error {
	if err := c.checkExternalRoot(cert, key); err != nil {
		return fmt.Errorf("prepare root: %w", err)
	}
	return c.prepare(ctx, func(time.Time) (*authority, error) {
		keyID, err := c.custody.newKeyID(ctx, keyPrefixWorkloadRoot)
		if err != nil {
			return nil, err
		}
		signer, err := c.custody.keys.ImportKey(ctx, keyID, key)
		if err != nil {
			return nil, err
		}
		return &authority{cert: cert, signer: signer, keyID: keyID}, nil
	})
}

// ErrBadRoot: an operator's root cannot be used.
var ErrBadRoot = errors.New("ca: unusable root")

// checkExternalRoot checks an operator's root and key.
func (c *CA) checkExternalRoot(cert *x509.Certificate, key crypto.Signer) error {
	now := c.clock.Now()
	switch err := checkCA(cert); {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrBadRoot, err)
	case cert.MaxPathLenZero:
		return fmt.Errorf("%w: path length 0 leaves no room for the intermediate", ErrBadRoot)
	case now.Before(cert.NotBefore) || !now.Before(cert.NotAfter):
		return fmt.Errorf("%w: not valid now (%s to %s)", ErrBadRoot, cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339))
	case !publicKeysEqual(key.Public(), cert.PublicKey):
		return fmt.Errorf("%w: %w", ErrBadRoot, ErrKeyMismatch)
	}
	if err := checkWorkloadRoot(cert, c.td); err != nil {
		return fmt.Errorf("%w: %v (a root needs exactly one URI SAN, %s, and must be self-signed)", ErrBadRoot, err, c.td.ID())
	}
	for _, r := range c.Roots() {
		if publicKeysEqual(r.PublicKey, cert.PublicKey) {
			return fmt.Errorf("%w: it has the key of a root in the bundle", ErrBadRoot)
		}
	}
	return nil
}

// prepare adds the root newRoot makes to the bundle, as phase prepared.
func (c *CA) prepare(ctx context.Context, newRoot func(now time.Time) (*authority, error)) error {
	return c.inPhase(ctx, "prepare root", PhaseNone, func(g *generation) error {
		now := c.clock.Now()
		root, err := newRoot(now)
		if err != nil {
			return err
		}
		next := rotationRecord{
			BundleVersion: g.rotation.bundleVersion() + 1,
			Phase:         PhasePrepared,
			Root:          root.record(),
			Started:       now,
			PhaseSince:    now,
		}
		if err := c.write(ctx, g, nil, next, root.keyID); err != nil {
			return err
		}
		c.logger.Info("root rotation prepared: new root added to the bundle", telemetry.KeySerial, root.cert.SerialNumber.Text(16),
			telemetry.KeyExpiry, root.cert.NotAfter, telemetry.KeyVersion, next.BundleVersion)
		return nil
	})
}

// ActivateRoot switches signing to a new intermediate under the prepared
// root. The old root stays in the bundle until RetireRoot.
func (c *CA) ActivateRoot(ctx context.Context) error {
	return c.inPhase(ctx, "activate root", PhasePrepared, func(g *generation) error {
		signer, err := c.custody.keys.GetKey(ctx, g.rotation.Root.KeyID)
		if err != nil {
			return fmt.Errorf("key %q of the new root: %w", g.rotation.Root.KeyID, err)
		}
		if !publicKeysEqual(signer.Public(), g.other.PublicKey) {
			return fmt.Errorf("key %q of the new root: %w", g.rotation.Root.KeyID, ErrKeyMismatch)
		}
		newRoot := &authority{cert: g.other, signer: signer, keyID: g.rotation.Root.KeyID}
		now := c.clock.Now()
		inter, err := c.generate(ctx, keyPrefixWorkloadIntermediate, func(s crypto.Signer) (*x509.Certificate, error) {
			return c.newIntermediate(s, newRoot, now)
		})
		if err != nil {
			return err
		}
		next := g.rotation
		next.Phase = PhaseActivated
		next.Root = g.root.record()
		next.OldIntermediateKeyID = g.intermediate.keyID
		next.PhaseSince = now
		next.RetireAfter = now.Add(c.svidTTL + retireSkew)
		rootOp, err := putRecord(keyWorkloadRoot, newRoot)
		if err != nil {
			return err
		}
		interOp, err := putRecord(keyWorkloadIntermediate, inter)
		if err != nil {
			return err
		}
		if err := c.write(ctx, g, []store.Op{rootOp, interOp}, next, inter.keyID); err != nil {
			return err
		}
		c.logger.Info("root rotation activated: a new intermediate under the new root signs", telemetry.KeySerial, inter.cert.SerialNumber.Text(16),
			telemetry.KeyExpiry, next.RetireAfter)
		return nil
	})
}

// RetireRoot ends a root rotation: the old root leaves the bundle and the
// old root's and intermediate's keys are deleted. It fails with ErrTooEarly
// before RetireAfter.
func (c *CA) RetireRoot(ctx context.Context) error {
	return c.inPhase(ctx, "retire root", PhaseActivated, func(g *generation) error {
		if now := c.clock.Now(); now.Before(g.rotation.RetireAfter) {
			return fmt.Errorf("%w: not before %s", ErrTooEarly, g.rotation.RetireAfter.Format(time.RFC3339))
		}
		next := rotationRecord{BundleVersion: g.rotation.bundleVersion() + 1}
		if err := c.write(ctx, g, nil, next, ""); err != nil {
			return err
		}
		c.deleteKeys(ctx, g.rotation.Root.KeyID, g.rotation.OldIntermediateKeyID)
		c.logger.Info("root rotation done: old root retired", telemetry.KeySerial, g.other.SerialNumber.Text(16),
			telemetry.KeyVersion, next.BundleVersion)
		return nil
	})
}

// RotateIntermediate replaces the intermediate with a new one under the
// same root. SVIDs issued by the old one stay valid (they carry it in their
// chain); its key is deleted. It is refused during a root rotation, which
// replaces the intermediate itself.
func (c *CA) RotateIntermediate(ctx context.Context) error {
	return c.inPhase(ctx, "rotate intermediate", PhaseNone, func(g *generation) error {
		now := c.clock.Now()
		inter, err := c.generate(ctx, keyPrefixWorkloadIntermediate, func(s crypto.Signer) (*x509.Certificate, error) {
			return c.newIntermediate(s, g.root, now)
		})
		if err != nil {
			return err
		}
		op, err := putRecord(keyWorkloadIntermediate, inter)
		if err != nil {
			return err
		}
		if err := c.write(ctx, g, []store.Op{op}, g.rotation, inter.keyID); err != nil {
			return err
		}
		c.deleteKeys(ctx, g.intermediate.keyID)
		c.logger.Info("intermediate rotated", telemetry.KeySerial, inter.cert.SerialNumber.Text(16), telemetry.KeyExpiry, inter.cert.NotAfter,
			telemetry.KeyDetail, "previous serial "+g.intermediate.cert.SerialNumber.Text(16))
		return nil
	})
}

// IntermediateDue reports whether the intermediate has less than a third
// of its lifetime left and should be rotated.
func (c *CA) IntermediateDue() bool {
	return lifetimeLeft(c.cur.Load().intermediate.cert, c.clock.Now()) < renewBelow
}

// RootDue reports whether the signing root has less than a third of its
// lifetime left and a root rotation should start.
func (c *CA) RootDue() bool {
	return lifetimeLeft(c.cur.Load().root.cert, c.clock.Now()) < renewBelow
}

// inPhase runs one rotation step: under the lock, on freshly read records,
// only in phase want (PhaseNone: refused while a root rotation runs), with
// fn's error prefixed by op.
func (c *CA) inPhase(ctx context.Context, op string, want Phase, fn func(g *generation) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, err := c.fresh(ctx)
	if err != nil {
		return err
	}
	switch have := g.rotation.Phase; {
	case have != want && want == PhaseNone:
		return fmt.Errorf("%s: %w (phase %s)", op, ErrRotationInProgress, have)
	case have != want:
		return fmt.Errorf("%s: %w: phase is %q, want %q", op, ErrWrongPhase, have, want)
	}
	if err := fn(g); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// fresh reloads the records so that an operation starts from the latest
// ones, and returns them.
func (c *CA) fresh(ctx context.Context) (*generation, error) {
	if err := c.Reload(ctx); err != nil {
		return nil, err
	}
	return c.cur.Load(), nil
}

// generate makes a key and a certificate for it.
func (c *CA) generate(ctx context.Context, prefix string, issue func(crypto.Signer) (*x509.Certificate, error)) (*authority, error) {
	keyID, err := c.custody.newKeyID(ctx, prefix)
	if err != nil {
		return nil, err
	}
	signer, err := c.custody.keys.GenerateKey(ctx, keyID)
	if err != nil {
		return nil, err
	}
	cert, err := issue(signer)
	if err != nil {
		c.deleteKeys(ctx, keyID)
		return nil, err
	}
	return &authority{cert: cert, signer: signer, keyID: keyID}, nil
}

// write applies ops and the rotation record next, if no record changed
// since g was read, and reloads. When the write conflicts, the key newKey,
// generated for it, is deleted; on any other error it is kept, since the
// write may have been applied.
func (c *CA) write(ctx context.Context, g *generation, ops []store.Op, next rotationRecord, newKey string) error {
	value, err := json.Marshal(next)
	if err != nil {
		return err
	}
	cmps := []store.Cmp{
		{Key: keyWorkloadRoot, ModRevision: g.root.rev},
		{Key: keyWorkloadIntermediate, ModRevision: g.intermediate.rev},
		{Key: keyWorkloadRotation, ModRevision: g.rotationRev},
	}
	ops = append(ops, store.Op{Key: keyWorkloadRotation, Value: value})
	if _, err := c.custody.store.Txn(ctx, cmps, ops); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Nothing was written: no record refers to newKey.
			c.deleteKeys(ctx, newKey)
			return fmt.Errorf("the ca changed concurrently, try again: %w", err)
		}
		// The outcome is unknown (an etcd request can fail after its
		// commit): a record may refer to newKey now, so it stays; at
		// worst it is a spare key.
		return err
	}
	return c.Reload(ctx)
}

// deleteKeys deletes keys no record refers to any more. A failure leaves a
// spare key behind, which is logged, not fatal.
func (c *CA) deleteKeys(ctx context.Context, ids ...string) {
	for _, id := range ids {
		if id == "" {
			continue
		}
		if err := c.custody.keys.Delete(ctx, id); err != nil {
			c.logger.Warn("delete retired ca key", telemetry.KeyName, id, telemetry.KeyErr, err)
		}
	}
}

// record returns the stored form of a.
func (a *authority) record() *record {
	return &record{Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw})), KeyID: a.keyID}
}

// putRecord is the store write of a's record at key.
func putRecord(key string, a *authority) (store.Op, error) {
	b, err := json.Marshal(a.record())
	return store.Op{Key: key, Value: b}, err
}

// parseRecordCert parses the certificate of a record.
func parseRecordCert(r record) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(r.Certificate))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(block.Bytes)
}

// KeyID returns the hex form of a subject or authority key ID, as proxies
// and `bulwark get proxies` show it.
func KeyID(b []byte) string { return hex.EncodeToString(b) }

// ParseRootPEM parses an operator's root: one PEM CERTIFICATE and its key,
// a PEM "PRIVATE KEY" (PKCS#8) or "EC PRIVATE KEY" (SEC 1). Errors never
// contain key material.
func ParseRootPEM(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%w: root certificate: no PEM CERTIFICATE block", ErrBadRoot)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: root certificate: %v", ErrBadRoot, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("%w: root key: no PEM block", ErrBadRoot)
	}
	var key any
	switch kb.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		return nil, nil, fmt.Errorf("%w: root key: PEM block %q, want PRIVATE KEY or EC PRIVATE KEY", ErrBadRoot, kb.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: root key: cannot parse it", ErrBadRoot)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%w: root key: not a signing key", ErrBadRoot)
	}
	return cert, signer, nil
}
