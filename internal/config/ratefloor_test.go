package config_test

import (
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// TestRateLimitFloor: a rate below one request a day is refused (its
// Retry-After would overflow), naming the field; one a day is the
// smallest accepted.
func TestRateLimitFloor(t *testing.T) {
	rl := func(body string) string { return gwRoute("rateLimits: [{" + body + "}]") }
	runGatewayCases(t, []gwCase{
		{name: "route_tiny", spec: rl("requestsPerSecond: 1e-300"), path: "spec.routes[0].rateLimits[0].requestsPerSecond", msg: "at least 1/86400"},
		{name: "spec_tiny", spec: gwListeners + "rateLimits: [{requestsPerSecond: 0.00001}]", path: "spec.rateLimits[0].requestsPerSecond", msg: "at least 1/86400"},
		{name: "one_a_day", spec: rl("requestsPerSecond: 0.0000115741")},
	})
	runTrafficCases(t, config.KindTrafficPolicy, []trafficCase{
		{name: "traffic_tiny", spec: "service: api\nrateLimit: {requestsPerSecond: 1e-300}", want: "spec.rateLimit.requestsPerSecond: 1e-300 is out of range: must be at least 1/86400 (one request a day)"},
		{name: "traffic_one_a_day", spec: "service: api\nrateLimit: {requestsPerSecond: 0.0000115741}"},
	})
}

// TestSecretDataNotBase64: data that is not base64 is named by its key,
// without its value; a value of another type says base64 is wanted.
func TestSecretDataNotBase64(t *testing.T) {
	doc := `{"apiVersion":"bulwark.dev/v1alpha1","kind":"Secret","metadata":{"name":"x"},"type":"kubernetes.io/tls","data":{"tls.key":"!not-base64-secret","tls.crt":7}}`
	_, err := config.DecodeObject([]byte(doc))
	if err == nil {
		t.Fatal("got no error")
	}
	for _, want := range []string{`data["tls.key"]: not base64`, `data["tls.crt"]: expected base64 data, got a number`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q in it", err, want)
		}
	}
	if strings.Contains(err.Error(), "not-base64-secret") {
		t.Errorf("error %q carries the value", err)
	}
}
