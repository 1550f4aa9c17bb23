//go:build linux

package workloadapi

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCredSupported: Linux has SO_PEERCRED.
const peerCredSupported = true

// peerCredOf reads SO_PEERCRED of a Unix socket connection.
func peerCredOf(conn net.Conn) (peerCred, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return peerCred{}, fmt.Errorf("connection is a %T, not a unix socket", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peerCred{}, err
	}
	var (
		ucred  *unix.Ucred
		getErr error
	)
	if err := raw.Control(func(fd uintptr) {
		ucred, getErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peerCred{}, err
	}
	if getErr != nil {
		return peerCred{}, fmt.Errorf("getsockopt SO_PEERCRED: %w", getErr)
	}
	return peerCred{pid: int(ucred.Pid), uid: int(ucred.Uid), gid: int(ucred.Gid)}, nil
}
