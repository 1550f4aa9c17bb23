package e2e_test

import (
	"flag"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// soak selects TestRotationSoak's long variant.
var soak = flag.Bool("soak", false, "TestRotationSoak: run the long variant (1000 req/s, --svid-ttl 2m, 10 minutes of leaf renewals first; about 13 minutes, so give -timeout 30m) instead of the CI one")

// rotationMesh is a control plane with a client-only proxy default/client
// and default/api in front of an app, with a policy letting client call
// api, and a load from client to api.
type rotationMesh struct {
	*mesh
	ttl      string
	client   *sidecar
	api      *sidecar
	load     *load
	phases   *phases
	services []string
	reported bool
}

// startRotationMesh starts the mesh with --svid-ttl ttl and proxies with
// proxyFlags, waits until client may call api and starts a load of rate
// requests per second.
func startRotationMesh(t *testing.T, ttl string, rate int, proxyFlags ...string) *rotationMesh {
	t.Helper()
	m := startControl(t, "--svid-ttl", ttl)
	rm := &rotationMesh{mesh: m, ttl: ttl, services: []string{"default/client", "default/api"}}
	rm.api = m.startProxy("default/api", startApp(t, "api").addr, proxyFlags...)
	rm.client = m.startClientProxy("default/client", proxyFlags...)
	mustCLI(t, m.env, "apply", "-f", writeFile(t, "policy.yaml", clientToAPI))
	td := m.mustCAStatus().TrustDomain
	wantXFCC := fmt.Sprintf("By=spiffe://%s/ns/default/sa/api;URI=spiffe://%s/ns/default/sa/client", td, td)
	cc := rm.client.client()
	eventually(t, 10*time.Second, "client may call api", func() error {
		if code, body := do(t, cc, http.MethodGet, "http://api.default/load", ""); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	m.waitConnected(10*time.Second, rm.services...)
	rm.load = startLoad(t, rm.client.outbound, "http://api.default/load", wantXFCC, rate)
	rm.phases = &phases{t: t, load: rm.load}
	t.Cleanup(func() {
		if !rm.reported { // the test stopped early: report the load anyway
			rm.phases.end()
			t.Logf("load: %s\nphases:%s", rm.load.stop(), rm.phases)
		}
	})
	return rm
}

// finish stops the load, logs the figures and fails the test unless every
// request succeeded.
func (rm *rotationMesh) finish(t *testing.T) {
	t.Helper()
	rm.reported = true
	rm.phases.end()
	st := rm.load.stop()
	t.Logf("load: %s\nphases:%s", st, rm.phases)
	if st.Failed != 0 {
		t.Errorf("%d of %d requests failed, want 0", st.Failed, st.Sent)
	}
	if st.Sent == 0 {
		t.Errorf("no request was sent")
	}
}

// rotatePhase matches the phase `bulwark ca rotate` prints.
var rotatePhase = regexp.MustCompile(`Rotation phase: (\w+)`)

// rotateRoot runs `bulwark ca rotate --root` on a mesh with one root and
// returns the status before and the phase the command printed.
func (rm *rotationMesh) rotateRoot(t *testing.T) (before caStatus, printed string) {
	t.Helper()
	before = rm.mustCAStatus()
	if before.Phase != "idle" || len(before.Roots) != 1 {
		t.Fatalf("before the root rotation: phase %q with roots %v, want idle with one root", before.Phase, before.rootSerials())
	}
	out := mustCLI(t, rm.env, "ca", "rotate", "--root")
	if !strings.Contains(out, "root rotation started.") {
		t.Errorf("ca rotate --root printed %q, want it to say the root rotation started", out)
	}
	if m := rotatePhase.FindStringSubmatch(out); m != nil {
		printed = m[1]
	}
	return before, printed
}

// newRootOf returns the serial of the root of st that is not old; a test
// failure unless st has exactly old and one other.
func newRootOf(t *testing.T, st caStatus, old string) string {
	t.Helper()
	serials := st.rootSerials()
	if len(serials) != 2 || !slices.Contains(serials, old) {
		t.Fatalf("phase %s: roots %v, want the old root %s and a new one", st.Phase, serials, old)
	}
	if serials[0] == old {
		return serials[1]
	}
	return serials[0]
}

// waitActivated polls `ca status` until the rotation started from before
// is activated, and checks the prepared phase it sees on the way. It
// returns the activated status.
func (rm *rotationMesh) waitActivated(t *testing.T, before caStatus, timeout time.Duration) caStatus {
	t.Helper()
	oldRoot := before.Roots[0].Serial
	var act caStatus
	poll(t, timeout, 200*time.Millisecond, "root rotation activated", func() (bool, error) {
		st, err := rm.caStatus()
		if err != nil {
			return false, err
		}
		switch st.Phase {
		case "prepared":
			newRootOf(t, st, oldRoot)
			if st.BundleVersion != before.BundleVersion+1 {
				return false, fmt.Errorf("prepared: bundle version %d, want %d", st.BundleVersion, before.BundleVersion+1)
			}
			return false, nil
		case "activated":
			act = st
			return true, nil
		}
		return false, fmt.Errorf("phase %q while waiting for activated: %+v", st.Phase, st)
	})
	newRoot := newRootOf(t, act, oldRoot)
	for _, r := range act.Roots {
		if r.Signing != (r.Serial == newRoot) {
			t.Errorf("activated: root %s signing=%v, want only the new root %s signing", r.Serial, r.Signing, newRoot)
		}
	}
	if act.Intermediate.SubjectKeyID == before.Intermediate.SubjectKeyID {
		t.Errorf("activated: the intermediate is still %s, want a new one under the new root", act.Intermediate.SubjectKeyID)
	}
	return act
}

// waitRetired polls `ca status` from activation until the rotation is back
// to idle with only newRoot. It returns when the proxies were first seen
// on the new intermediate.
func (rm *rotationMesh) waitRetired(t *testing.T, before caStatus, newRoot string, timeout time.Duration) (renewed time.Time) {
	t.Helper()
	poll(t, timeout, 500*time.Millisecond, "old root retired", func() (bool, error) {
		st, err := rm.caStatus()
		if err != nil {
			return false, err
		}
		switch st.Phase {
		case "activated":
			if renewed.IsZero() && st.Proxies.OnSigningAuthority == len(rm.services) {
				renewed = time.Now()
			}
			return false, nil
		case "idle":
			if got := st.rootSerials(); len(got) != 1 || got[0] != newRoot {
				return false, fmt.Errorf("idle after the rotation: roots %v, want only the new root %s", got, newRoot)
			}
			if st.BundleVersion != before.BundleVersion+2 {
				return false, fmt.Errorf("idle after the rotation: bundle version %d, want %d", st.BundleVersion, before.BundleVersion+2)
			}
			return true, nil
		}
		return false, fmt.Errorf("phase %q while waiting for idle", st.Phase)
	})
	if renewed.IsZero() {
		t.Logf("the proxies' renewal under the new root was not observed while activated")
	}
	return renewed
}

// waitOnAuthority waits until every proxy of the mesh presents an SVID
// signed by the intermediate with subject key ID skid and has ACKed bundle
// version (when not 0).
func (rm *rotationMesh) waitOnAuthority(t *testing.T, skid string, bundle int64, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "proxies on intermediate "+skid, func() error {
		for _, s := range rm.services {
			p, err := rm.connectedProxy(s)
			if err != nil {
				return err
			}
			if p.SVIDAuthority != skid {
				return fmt.Errorf("%s: svid authority %s", s, p.SVIDAuthority)
			}
			if bundle != 0 && p.BundleVersion != bundle {
				return fmt.Errorf("%s: bundle version %d, want %d", s, p.BundleVersion, bundle)
			}
		}
		return nil
	})
}

// TestRotationSoak runs every identity rotation under a steady load from
// client to api and requires every request to succeed with the right
// caller identity: leaf SVID renewals, a root rotation through its phases,
// an intermediate rotation, and a control-plane restart. Without -soak it
// is the CI variant (about 3 minutes); with -soak the long one.
func TestRotationSoak(t *testing.T) {
	t.Parallel()
	rate, ttl, leafFor := 200, "1m", time.Duration(0)
	var proxyFlags []string
	if *soak {
		rate, ttl, leafFor = 1000, "2m", 10*time.Minute
		// The harness keeps every process's output in memory: a million
		// access-log lines per proxy would take gigabytes.
		proxyFlags = []string{"--log-level", "warn"}
		t.Logf("variant: long (-soak): %d req/s, --svid-ttl %s, %s of leaf renewals first; proxies log at warn (no access log)", rate, ttl, leafFor)
	} else {
		t.Logf("variant: CI (no -soak): %d req/s, --svid-ttl %s, leaf renewals until each proxy renewed once", rate, ttl)
	}
	ttlDur, _ := time.ParseDuration(ttl)
	rm := startRotationMesh(t, ttl, rate, proxyFlags...)
	ph := rm.phases

	// Leaf SVIDs renew under load (at 50-60% of their lifetime).
	ph.begin("leaf renewals")
	last, renewals := map[string]string{}, map[string]int{}
	for _, s := range rm.services {
		p, err := rm.connectedProxy(s)
		if err != nil || p.SVIDSerial == "" {
			t.Fatalf("%s: %v, serial %q", s, err, p.SVIDSerial)
		}
		last[s] = p.SVIDSerial
	}
	began := time.Now()
	poll(t, leafFor+ttlDur+30*time.Second, time.Second, "leaf renewals", func() (bool, error) {
		for _, s := range rm.services {
			p, err := rm.connectedProxy(s)
			if err != nil {
				continue // reconnecting after a renewal
			}
			if p.SVIDSerial != last[s] {
				renewals[s]++
				last[s] = p.SVIDSerial
			}
		}
		if leafFor > 0 {
			return time.Since(began) >= leafFor, nil
		}
		return renewals["default/client"] > 0 && renewals["default/api"] > 0, nil
	})
	t.Logf("leaf renewals seen in get proxies: %v", renewals)
	for _, s := range rm.services {
		if renewals[s] == 0 {
			t.Errorf("%s did not renew its SVID", s)
		}
	}

	// Root rotation: prepared -> activated -> idle with only the new root.
	ph.begin("root rotation: prepared")
	before, printed := rm.rotateRoot(t)
	t.Logf("ca rotate --root printed phase %q", printed)
	act := rm.waitActivated(t, before, 60*time.Second)
	newRoot := newRootOf(t, act, before.Roots[0].Serial)
	ph.begin("root rotation: activated")
	retireBy := time.Until(act.RetireAfter) + 2*time.Minute
	renewed := rm.waitRetired(t, before, newRoot, retireBy)
	if !renewed.IsZero() {
		t.Logf("both proxies on the new intermediate %s after activation (at %s); retireAfter was %s after activation",
			renewed.Sub(act.PhaseSince).Round(100*time.Millisecond), renewed.Format("15:04:05.000"), act.RetireAfter.Sub(act.PhaseSince))
	}
	ph.begin("root rotation: bundle without the old root")
	rm.waitOnAuthority(t, act.Intermediate.SubjectKeyID, before.BundleVersion+2, 30*time.Second)

	// Intermediate rotation: at once; proxies renew early.
	ph.begin("intermediate rotation")
	beforeInt := rm.mustCAStatus()
	mustCLI(t, rm.env, "ca", "rotate", "--intermediate")
	afterInt := rm.mustCAStatus()
	if afterInt.Intermediate.SubjectKeyID == beforeInt.Intermediate.SubjectKeyID {
		t.Fatalf("ca rotate --intermediate: the intermediate is still %s", afterInt.Intermediate.SubjectKeyID)
	}
	if afterInt.Phase != "idle" || !slices.Equal(afterInt.rootSerials(), beforeInt.rootSerials()) || afterInt.BundleVersion != beforeInt.BundleVersion {
		t.Errorf("after ca rotate --intermediate: phase %s, roots %v, bundle %d; want idle, roots %v, bundle %d",
			afterInt.Phase, afterInt.rootSerials(), afterInt.BundleVersion, beforeInt.rootSerials(), beforeInt.BundleVersion)
	}
	rm.waitOnAuthority(t, afterInt.Intermediate.SubjectKeyID, 0, ttlDur)

	// The control plane restarts on its data dir; proxies reconnect.
	ph.begin("control plane restart")
	down := rm.restartControl(nil, "--svid-ttl", ttl)
	rm.waitConnected(30*time.Second, rm.services...)
	t.Logf("control plane restarted: admin API back after %s", down.Round(time.Millisecond))
	if st := rm.mustCAStatus(); st.Intermediate.SubjectKeyID != afterInt.Intermediate.SubjectKeyID || !slices.Equal(st.rootSerials(), afterInt.rootSerials()) {
		t.Errorf("after the restart: intermediate %s, roots %v; want %s, %v", st.Intermediate.SubjectKeyID, st.rootSerials(),
			afterInt.Intermediate.SubjectKeyID, afterInt.rootSerials())
	}
	// Keep the load on for about 10 more seconds' worth of requests, all
	// of them through the restarted control plane's snapshots.
	ph.begin("after the restart")
	target := rm.load.stats().OK + int64(10*rate)
	eventually(t, time.Minute, "10s more of load after the restart", func() error {
		if st := rm.load.stats(); st.OK < target {
			return fmt.Errorf("%d of %d requests answered", st.OK, target)
		}
		return nil
	})
	rm.finish(t)
}

// TestRootRotationSurvivesControlRestart restarts the control plane right
// after `ca rotate --root` and again while the rotation is activated: the
// rotation resumes from the store and completes, and requests succeed
// throughout.
func TestRootRotationSurvivesControlRestart(t *testing.T) {
	t.Parallel()
	const ttl = "1m"
	rm := startRotationMesh(t, ttl, 50)
	ph := rm.phases

	ph.begin("rotate --root, restart at once")
	before, printed := rm.rotateRoot(t)
	oldRoot := before.Roots[0].Serial
	rm.restartControl(nil, "--svid-ttl", ttl)
	st := rm.mustCAStatus()
	t.Logf("ca rotate --root printed phase %q; after the restart: %q", printed, st.Phase)
	if st.Phase != "prepared" && st.Phase != "activated" {
		t.Fatalf("after a restart right after ca rotate --root: phase %q with roots %v, want the rotation to go on", st.Phase, st.rootSerials())
	}
	newRoot := newRootOf(t, st, oldRoot)

	ph.begin("prepared -> activated")
	act := rm.waitActivated(t, before, 60*time.Second)
	if got := newRootOf(t, act, oldRoot); got != newRoot {
		t.Fatalf("activated root %s, want %s (the one prepared before the restart)", got, newRoot)
	}

	ph.begin("restart while activated")
	rm.restartControl(nil, "--svid-ttl", ttl)
	after := rm.mustCAStatus()
	if after.Phase != "activated" {
		t.Fatalf("after a restart while activated: phase %q, want activated", after.Phase)
	}
	if !after.RetireAfter.Equal(act.RetireAfter) || after.Intermediate.SubjectKeyID != act.Intermediate.SubjectKeyID ||
		!slices.Equal(after.rootSerials(), act.rootSerials()) || after.BundleVersion != act.BundleVersion {
		t.Errorf("a restart changed the activated rotation:\n got retireAfter %s, intermediate %s, roots %v, bundle %d\nwant retireAfter %s, intermediate %s, roots %v, bundle %d",
			after.RetireAfter, after.Intermediate.SubjectKeyID, after.rootSerials(), after.BundleVersion,
			act.RetireAfter, act.Intermediate.SubjectKeyID, act.rootSerials(), act.BundleVersion)
	}
	rm.waitConnected(30*time.Second, rm.services...)

	ph.begin("activated -> idle")
	rm.waitRetired(t, before, newRoot, time.Until(act.RetireAfter)+2*time.Minute)
	rm.waitOnAuthority(t, act.Intermediate.SubjectKeyID, before.BundleVersion+2, 30*time.Second)
	rm.finish(t)
}
