package telemetry_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

func TestMetricsHandler(t *testing.T) {
	reg := telemetry.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	srv := httptest.NewServer(telemetry.MetricsHandler(reg))
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body := string(b)
	tests := []struct {
		name string
		want string
	}{
		{name: "registered_metric", want: "\nbulwark_test_total 3\n"},
		{name: "go_collector", want: "\ngo_goroutines "},
		{name: "process_collector", want: "\nprocess_start_time_seconds "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(body, tt.want) {
				t.Errorf("got a body without %q:\n%s", tt.want, body)
			}
		})
	}
}

// TestNewRegistryIsNotGlobal: each registry is its own; nothing lands in
// the default one.
func TestNewRegistryIsNotGlobal(t *testing.T) {
	a, b := telemetry.NewRegistry(), telemetry.NewRegistry()
	a.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "bulwark_only_in_a_total", Help: "x"}))
	for name, g := range map[string]prometheus.Gatherer{"other registry": b, "default registry": prometheus.DefaultGatherer} {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "bulwark_only_in_a_total" {
				t.Errorf("%s: got bulwark_only_in_a_total, want it only in the registry it was registered in", name)
			}
		}
	}
}
