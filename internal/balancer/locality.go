package balancer

import (
	"fmt"
	"strings"
)

// Locality of an endpoint or of the caller. The zero value is the unknown
// locality.
type Locality struct {
	// Region, for example "eu-west-1"; empty when unknown.
	Region string
	// Zone within Region, for example "eu-west-1a"; empty when unknown.
	Zone string
}

// maxLocalityPart is the longest region or zone name.
const maxLocalityPart = 63

// ParseLocality parses "region/zone", "region" or "" (the unknown
// locality). Each part is 1 to 63 characters from [a-z0-9-_.].
func ParseLocality(s string) (Locality, error) {
	if s == "" {
		return Locality{}, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) > 2 {
		return Locality{}, fmt.Errorf("parse locality %q: want region or region/zone, got %d parts", s, len(parts))
	}
	for i, p := range parts {
		name := "region"
		if i == 1 {
			name = "zone"
		}
		if err := checkLocalityPart(p); err != nil {
			return Locality{}, fmt.Errorf("parse locality %q: %s: %w", s, name, err)
		}
	}
	l := Locality{Region: parts[0]}
	if len(parts) == 2 {
		l.Zone = parts[1]
	}
	return l, nil
}

func checkLocalityPart(p string) error {
	if p == "" {
		return fmt.Errorf("empty")
	}
	if len(p) > maxLocalityPart {
		return fmt.Errorf("longer than %d characters", maxLocalityPart)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("invalid character %q (want a-z, 0-9, '-', '_' or '.')", c)
		}
	}
	return nil
}

// Known reports whether the region is known.
func (l Locality) Known() bool { return l.Region != "" }

// String returns "region/zone", "region" or "" (unknown), the form
// ParseLocality reads.
func (l Locality) String() string {
	if l.Zone == "" {
		return l.Region
	}
	return l.Region + "/" + l.Zone
}
