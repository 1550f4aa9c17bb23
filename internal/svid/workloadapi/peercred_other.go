//go:build !linux

package workloadapi

import (
	"errors"
	"net"
)

// peerCredSupported: only Linux is supported; New fails elsewhere.
const peerCredSupported = false

// peerCredOf fails closed where SO_PEERCRED does not exist.
func peerCredOf(net.Conn) (peerCred, error) {
	return peerCred{}, errors.New("peer credentials are not supported on this platform")
}
