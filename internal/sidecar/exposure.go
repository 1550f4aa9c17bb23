package sidecar

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// tcpListen is the state of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// exposedListeners returns the non-loopback local addresses on which a TCP
// socket listens on port, read from /proc/net/tcp and /proc/net/tcp6. On
// systems without them it returns an error and the check is skipped.
func exposedListeners(port int) ([]string, error) {
	var out []string
	found := false
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		addrs, err := listenersFrom(f, port)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		found = true
		out = append(out, addrs...)
	}
	if !found {
		return nil, errors.New("no /proc/net/tcp")
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func listenersFrom(path string, port int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != tcpListen {
			continue
		}
		ip, p, err := parseProcAddr(fields[1])
		if err != nil || p != port || ip.IsLoopback() {
			continue
		}
		out = append(out, net.JoinHostPort(ip.String(), strconv.Itoa(p)))
	}
	return out, sc.Err()
}

// parseProcAddr parses "0100007F:1F90" (IPv4) or the 32-hex-digit IPv6 form;
// the address is in host byte order per 32-bit word.
func parseProcAddr(s string) (net.IP, int, error) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return nil, 0, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(hexIP)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return nil, 0, fmt.Errorf("bad address %q", s)
	}
	// Each 32-bit word is printed as a number in the host's byte order.
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(ip[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("bad port %q", s)
	}
	return ip, int(port), nil
}
