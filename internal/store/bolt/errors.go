package bolt

import "errors"

// Errors of Open.
var (
	// ErrLocked: another process holds the store file open (bbolt's file
	// lock was not obtained within Config.LockTimeout). Open wraps it as
	// "open store <path>: locked by another process (...)".
	ErrLocked = errors.New("locked by another process (is another control plane using this data dir?)")
)
