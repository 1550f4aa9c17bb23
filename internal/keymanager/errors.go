package keymanager

import "errors"

// Errors of reading a key.
var (
	// ErrNotFound is returned by GetKey for a key that does not exist.
	ErrNotFound = errors.New("keymanager: key not found")
	// ErrCorrupt is wrapped by the error of GetKey for a key file that
	// cannot be decoded or decrypted (bad PEM, truncated or altered
	// ciphertext, a file moved from another key id or data dir), and by the
	// error of NewDisk for an unreadable keyring.json. The file is left as it
	// is.
	ErrCorrupt = errors.New("keymanager: corrupted key data")
)

// Errors of opening a Disk.
var (
	// ErrWrongSecret is wrapped by the error of NewDisk when its Secret is not
	// the one the data dir's keys were encrypted with. Nothing is written.
	ErrWrongSecret = errors.New("keymanager: wrong secret: the passphrase (BULWARK_CA_KEY_PASSPHRASE) or key file (--ca-key-file) does not match the one this data dir's keys were encrypted with")
)
