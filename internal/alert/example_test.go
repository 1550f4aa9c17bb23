package alert_test

import (
	"fmt"
	"time"

	"github.com/bulwarkmesh/bulwark/internal/alert"
)

// A webhook receiver checks each delivery: the signature over
// "<timestamp>.<body>" with the shared secret, and a fresh timestamp.
func ExampleVerify() {
	secret := []byte("a-long-random-shared-secret")
	body := []byte(`{"kind":"Alert"}`)
	sent := time.Unix(1_800_000_000, 0)
	ts := fmt.Sprint(sent.Unix())
	sig := alert.Sign(secret, ts, body) // what the control plane sends

	fmt.Println(alert.Verify(secret, sig, ts, body, sent.Add(time.Second), 5*time.Minute))
	fmt.Println(alert.Verify(secret, sig, ts, body, sent.Add(time.Hour), 5*time.Minute))
	fmt.Println(alert.Verify([]byte("another-secret"), sig, ts, body, sent, 5*time.Minute))
	// Output:
	// <nil>
	// verify webhook: timestamp outside the accepted window
	// verify webhook: signature mismatch
}
