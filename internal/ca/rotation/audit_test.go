package rotation_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bulwarkmesh/bulwark/internal/ca"
	"github.com/bulwarkmesh/bulwark/internal/ca/rotation"
)

func TestStepsAreAudited(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var got []string
	var fail error
	m, err := rotation.New(rotation.Config{CA: e.ca, Fleet: e.fleet, Clock: e.clock,
		Audit: func(_ context.Context, action, _ string) error {
			if fail != nil {
				return fail
			}
			got = append(got, action)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	old := e.authority()
	e.fleet.set(rotation.Proxy{Name: "default/web-1", BundleVersion: 1, SVIDAuthority: old})
	if err := m.StartRoot(ctx); err != nil {
		t.Fatal(err)
	}
	e.fleet.set(rotation.Proxy{Name: "default/web-1", BundleVersion: 2, SVIDAuthority: old})

	// The audit log is down: the step is not taken.
	fail = errors.New("audit log unavailable")
	if err := m.Step(ctx); err == nil || !errors.Is(err, fail) {
		t.Fatalf("got %v, want the audit error", err)
	}
	if p := e.ca.Rotation().Phase; p != ca.PhasePrepared {
		t.Fatalf("got phase %q after a failed audit, want prepared (unchanged)", p)
	}
	fail = nil
	if err := m.Step(ctx); err != nil {
		t.Fatal(err)
	}
	e.fleet.set(rotation.Proxy{Name: "default/web-1", BundleVersion: 2, SVIDAuthority: e.authority()})
	e.clock.Advance(e.ca.Rotation().RetireAfter.Sub(e.clock.Now()))
	if err := m.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ca.root.activate", "ca.root.retire"}, got); diff != "" {
		t.Errorf("audited steps (-want +got):\n%s", diff)
	}
}
