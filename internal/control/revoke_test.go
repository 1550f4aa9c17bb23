package control_test

import (
	"context"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/bulwarkmesh/bulwark/api/v1alpha1"
	"github.com/bulwarkmesh/bulwark/internal/admin"
)

// endCode drains snapshots until the stream ends and returns its code.
func (s *sub) endCode(t *testing.T) codes.Code {
	t.Helper()
	for {
		snap, err := s.stream.Recv()
		if err != nil {
			return status.Code(err)
		}
		_ = s.stream.Send(ackMsg(snap.GetVersion(), ""))
	}
}

// connected attests a proxy of service, subscribes it and ACKs its first
// snapshot.
func connected(t *testing.T, p *runningPlane, service string) (*workload, *sub, *apiv1.Snapshot) {
	t.Helper()
	w := p.attest(t, service, "")
	s := subscribe(t, w.client, nodeMsg(w.node(w.listen(t, p.mesh))))
	snap := s.recv(t)
	s.send(t, ackMsg(snap.GetVersion(), ""))
	return w, s, snap
}

func TestSignJWTSVID(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web, _, snap := connected(t, p, "shop/web")
	ctx := context.Background()

	resp, err := web.client.SignJWTSVID(ctx, &apiv1.SignJWTSVIDRequest{Audience: []string{"spiffe://bulwark.test/ns/shop/sa/api"}})
	if err != nil {
		t.Fatalf("SignJWTSVID: %v", err)
	}
	bundle, err := jwtbundle.Parse(td, snap.GetJwtBundle())
	if err != nil {
		t.Fatalf("parse the snapshot's jwt bundle: %v", err)
	}
	svid, err := jwtsvid.ParseAndValidate(resp.GetToken(), bundle, []string{"spiffe://bulwark.test/ns/shop/sa/api"})
	if err != nil {
		t.Fatalf("validate the jwt-svid with the snapshot's bundle: %v", err)
	}
	if svid.ID != web.svid.ID {
		t.Errorf("jwt-svid subject: got %s, want %s", svid.ID, web.svid.ID)
	}
	if _, err := jwtsvid.ParseAndValidate(resp.GetToken(), bundle, []string{"other"}); err == nil {
		t.Error("validate for another audience: got nil error, want one")
	}

	for _, aud := range [][]string{nil, {""}} {
		_, err := web.client.SignJWTSVID(ctx, &apiv1.SignJWTSVIDRequest{Audience: aud})
		wantCode(t, err, codes.InvalidArgument)
	}
	_, err = p.dial(t, nil).SignJWTSVID(ctx, &apiv1.SignJWTSVIDRequest{Audience: []string{"x"}})
	wantCode(t, err, codes.Unauthenticated)
}

func TestRevokeInstance(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web, webSub, _ := connected(t, p, "shop/web")
	_, apiSub, _ := connected(t, p, "shop/api")
	serial := web.svid.Certificates[0].SerialNumber.Text(16)
	ctx := context.Background()

	out, err := p.admin.Revoke(ctx, admin.RevokeRequest{Namespace: "shop", Service: "web", Instance: web.instance})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if !slices.Equal(out.Serials, []string{serial}) || len(out.Identities) != 0 {
		t.Errorf("revoked: got serials %v identities %v, want [%s] and none", out.Serials, out.Identities, serial)
	}

	// The revoked proxy's stream ends; its peers learn the serial.
	if code := webSub.endCode(t); code != codes.PermissionDenied {
		t.Errorf("revoked proxy's stream: got %v, want PermissionDenied", code)
	}
	for {
		snap := apiSub.recv(t)
		apiSub.send(t, ackMsg(snap.GetVersion(), ""))
		if slices.Contains(snap.GetRevokedSerials(), serial) {
			break
		}
	}

	// It can renew nothing.
	_, err = web.client.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: newCSR(t, newKey(t), nil)})
	wantCode(t, err, codes.PermissionDenied)
	_, err = web.client.SignJWTSVID(ctx, &apiv1.SignJWTSVIDRequest{Audience: []string{"x"}})
	wantCode(t, err, codes.PermissionDenied)
	again := subscribe(t, web.client, nodeMsg(web.node("")))
	if code, _ := again.recvErr(t); code != codes.PermissionDenied {
		t.Errorf("revoked proxy subscribing again: got %v, want PermissionDenied", code)
	}

	// Another instance of the same identity is not affected.
	other := p.attest(t, "shop/web", "")
	if _, err := other.client.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: newCSR(t, newKey(t), nil)}); err != nil {
		t.Errorf("another instance renewing: %v", err)
	}

	if _, err := p.admin.Revoke(ctx, admin.RevokeRequest{Namespace: "shop", Service: "nope"}); err == nil {
		t.Error("revoke of an unknown service: got nil error, want one")
	}
}

func TestRevokeServiceBlocksIdentityUntilAttestedAgain(t *testing.T) {
	t.Parallel()
	p := startRun(t, runOptions{})
	web, webSub, _ := connected(t, p, "shop/web")
	ctx := context.Background()

	out, err := p.admin.Revoke(ctx, admin.RevokeRequest{Namespace: "shop", Service: "web"})
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if !slices.Equal(out.Identities, []string{web.svid.ID.String()}) {
		t.Errorf("revoked identities: got %v, want [%s]", out.Identities, web.svid.ID)
	}
	if code := webSub.endCode(t); code != codes.PermissionDenied {
		t.Errorf("revoked proxy's stream: got %v, want PermissionDenied", code)
	}

	// A new join token is the operator's decision to admit it again; its
	// old SVID stays revoked.
	fresh := p.attest(t, "shop/web", "")
	if _, err := fresh.client.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: newCSR(t, newKey(t), nil)}); err != nil {
		t.Errorf("renewal after a new attestation: %v", err)
	}
	_, err = web.client.SignSVID(ctx, &apiv1.SignSVIDRequest{Csr: newCSR(t, newKey(t), nil)})
	wantCode(t, err, codes.PermissionDenied)
}
