// Package audit owns the control plane's tamper-evident audit log: an
// append-only chain of entries kept in the store (store.Store), each
// hash-chained to the previous one, periodically sealed by a checkpoint
// signed with the control plane's audit key (held by the key manager, like
// the CA keys), and the verification of such a chain, online or from an
// exported file. It also owns the aggregation of frequent events
// (authentication failures, SVID signings) into bounded, counted entries,
// so that no client can flood the log.
//
// # Layout in the store
//
//	/audit/entries/<seq, 20 digits>  one Entry (canonical JSON, see Canonical)
//	/audit/head                      Head: the seq and hash of the last entry
//	/audit/checkpoints/<seq, 20 d.>  one Checkpoint, signed
//
// Every append compares the head's ModRevision (compare-and-swap), so
// writers on several control-plane replicas produce one chain: a writer that
// loses the race prepares again on the new head.
//
// # What verification proves
//
// Verify detects an edited entry (its bytes are not its canonical encoding,
// or its hash is wrong), a deleted or reordered entry (a gap in seq, or a
// prev that is not the previous entry's hash), a head that does not match
// the last entry, and a checkpoint that does not match the chain or whose
// signature fails (truncation before the last checkpoint, rewritten
// history). It cannot detect an attacker who holds both the store and the
// audit key and rewrites everything: keep exports elsewhere (docs/audit.md).
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Store keys.
const (
	// Prefix is the store prefix of everything the audit log keeps.
	Prefix = "/audit/"
	// EntryPrefix is the prefix of the entries.
	EntryPrefix = "/audit/entries/"
	// CheckpointPrefix is the prefix of the checkpoints.
	CheckpointPrefix = "/audit/checkpoints/"
	// HeadKey holds the Head.
	HeadKey = "/audit/head"
)

// Actions recorded in the log.
const (
	ActionApply         = "apply"
	ActionDelete        = "delete"
	ActionTokenCreate   = "token.create"
	ActionCARotate      = "ca.rotate"
	ActionCARootImport  = "ca.root.import"
	ActionCARootPrepare = "ca.root.prepare"
	ActionCARootActive  = "ca.root.activate"
	ActionCARootRetire  = "ca.root.retire"
	ActionCAIntRenew    = "ca.intermediate.renew"
	ActionProxyRevoke   = "proxy.revoke"
	ActionOperator      = "operator.create"
	ActionAttest        = "attest"
	ActionSVIDSign      = "svid.sign"
	ActionAuthFailure   = "auth.failure"
	ActionCheckpoint    = "checkpoint"
)

// Outcomes of an entry.
const (
	OutcomeOK      = "ok"
	OutcomeFailed  = "failed"
	OutcomeStarted = "started"
)

// ActorSystem is the actor of what the control plane does by itself.
const ActorSystem = "system"

// Entry is one record of the log. Seq, Time, Prev and Hash are set when the
// entry is appended; the rest says what happened.
type Entry struct {
	// Seq numbers entries from 1, without gaps.
	Seq uint64 `json:"seq"`
	// Time is when the entry was appended (RFC 3339, nanoseconds, UTC).
	Time string `json:"time"`
	// Actor is who did it: an operator's name, a proxy's SPIFFE ID, or
	// "system"; for a failed authentication the claimed identity, if any.
	Actor string `json:"actor"`
	// Action is what was done (the Action constants).
	Action string `json:"action"`
	// Kind, Namespace and Name name the resource, when there is one.
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Before and After are the hex SHA-256 of the stored document before
	// and after the change; "" when it did not exist.
	Before string `json:"before"`
	After  string `json:"after"`
	// Source is the network address (IP) of the client, when known.
	Source string `json:"source"`
	// Outcome is "ok", "failed", "started", or a resource outcome
	// ("created", "configured", "deleted").
	Outcome string `json:"outcome"`
	// Detail is a short free text; never a secret.
	Detail string `json:"detail"`
	// Count is how many events an aggregated entry stands for (1 for
	// others).
	Count int64 `json:"count"`
	// Prev is the Hash of the previous entry ("" for the first).
	Prev string `json:"prev"`
	// Hash is the hex SHA-256 of the entry's canonical encoding without
	// Hash.
	Hash string `json:"hash"`
}

// hashed is Entry without Hash: the fields, in this fixed order, that the
// hash covers.
type hashed struct {
	Seq       uint64 `json:"seq"`
	Time      string `json:"time"`
	Actor     string `json:"actor"`
	Action    string `json:"action"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Before    string `json:"before"`
	After     string `json:"after"`
	Source    string `json:"source"`
	Outcome   string `json:"outcome"`
	Detail    string `json:"detail"`
	Count     int64  `json:"count"`
	Prev      string `json:"prev"`
}

// ComputeHash returns the hex SHA-256 of e's canonical encoding without
// its Hash: JSON of a struct with every field but Hash, in fixed order,
// none omitted, so two different entries never encode alike.
func ComputeHash(e Entry) string {
	b, _ := json.Marshal(hashed{
		Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Kind: e.Kind, Namespace: e.Namespace,
		Name: e.Name, Before: e.Before, After: e.After, Source: e.Source, Outcome: e.Outcome, Detail: e.Detail,
		Count: e.Count, Prev: e.Prev,
	})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Canonical is the stored encoding of e: JSON with every field, in the
// order of Entry. Verify accepts an entry only if its bytes are exactly
// this, so no byte of a stored entry can change unnoticed.
func Canonical(e Entry) []byte {
	b, _ := json.Marshal(e)
	return b
}

// Digest is the hex SHA-256 of a stored document, "" for none (nil).
func Digest(doc []byte) string {
	if doc == nil {
		return ""
	}
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:])
}

// Head is the last entry of the chain, as kept under HeadKey.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	// Checkpoint is the seq of the last checkpoint entry (0: none yet).
	Checkpoint uint64 `json:"checkpoint"`
	// CheckpointTime is when it was made (RFC 3339).
	CheckpointTime string `json:"checkpointTime"`
}

// Checkpoint seals the chain up to Seq, whose entry has Hash: Signature
// is the ECDSA P-256 ASN.1 signature, by the audit key KeyID, over the
// SHA-256 of the checkpoint's canonical encoding without Signature.
type Checkpoint struct {
	Seq       uint64 `json:"seq"`
	Hash      string `json:"hash"`
	Time      string `json:"time"`
	KeyID     string `json:"keyId"`
	Signature []byte `json:"signature"`
}

// signedPart is what a checkpoint's signature covers.
type signedPart struct {
	Domain string `json:"domain"`
	Seq    uint64 `json:"seq"`
	Hash   string `json:"hash"`
	Time   string `json:"time"`
	KeyID  string `json:"keyId"`
}

// checkpointDomain separates checkpoint signatures from anything else the
// key could sign.
const checkpointDomain = "bulwark-audit-checkpoint-v1"

// signedDigest is the SHA-256 a checkpoint's signature covers.
func (c Checkpoint) signedDigest() []byte {
	b, _ := json.Marshal(signedPart{Domain: checkpointDomain, Seq: c.Seq, Hash: c.Hash, Time: c.Time, KeyID: c.KeyID})
	sum := sha256.Sum256(b)
	return sum[:]
}

// EntryKey is the store key of the entry seq.
func EntryKey(seq uint64) string { return EntryPrefix + pad(seq) }

// CheckpointKey is the store key of the checkpoint at seq.
func CheckpointKey(seq uint64) string { return CheckpointPrefix + pad(seq) }

func pad(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// CheckpointDigest is the SHA-256 a checkpoint's signature covers (its
// fields but Signature, with a domain separator).
func CheckpointDigest(c Checkpoint) []byte { return c.signedDigest() }
