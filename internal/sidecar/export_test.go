package sidecar

import "github.com/spiffe/go-spiffe/v2/spiffeid"

// Exported for the external tests of this package.
var (
	ParseProcAddr    = parseProcAddr
	ListenersFrom    = listenersFrom
	ExposedListeners = exposedListeners
)

// Validate exposes Config.validate.
func (c *Config) Validate() (spiffeid.TrustDomain, error) { return c.validate() }
