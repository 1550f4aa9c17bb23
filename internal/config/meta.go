package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/identity"
)

// validateMeta checks the metadata of a namespaced resource and fills in the
// default namespace.
func validateMeta(m *ObjectMeta, errs *FieldErrors) {
	if m.Namespace == "" {
		m.Namespace = identity.DefaultNamespace
	}
	if m.Name == "" {
		errs.add("metadata.name", "required")
	} else if err := identity.ValidateName(m.Name); err != nil {
		errs.add("metadata.name", "%v", err)
	}
	if err := identity.ValidateName(m.Namespace); err != nil {
		errs.add("metadata.namespace", "%v", err)
	}
	for k := range m.Labels {
		if k == "" || len(k) > 63 {
			errs.add("metadata.labels", "key %q must be 1 to 63 characters", k)
		}
	}
}

// ValidateLabel checks one label as Kubernetes does: the key is an optional
// DNS-subdomain prefix and '/' followed by a name of at most 63 characters
// of letters, digits, '-', '_' and '.', beginning and ending with a letter
// or digit; the value is empty or such a name.
func ValidateLabel(key, value string) error {
	name := key
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		prefix := key[:i]
		name = key[i+1:]
		if prefix == "" || len(prefix) > 253 || !labelPrefix(prefix) {
			return fmt.Errorf("label key %q: the prefix must be a DNS subdomain of at most 253 characters", key)
		}
	}
	if name == "" || !labelName(name) {
		return fmt.Errorf("label key %q: must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", key)
	}
	if value != "" && !labelName(value) {
		return fmt.Errorf("label %q value %q: must be empty or 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", key, value)
	}
	return nil
}

// labelName reports whether s is a Kubernetes label name.
func labelName(s string) bool {
	if len(s) == 0 || len(s) > 63 || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// labelPrefix reports whether s is a DNS subdomain in lower case.
func labelPrefix(s string) bool {
	for _, part := range strings.Split(s, ".") {
		if len(part) == 0 || len(part) > 63 || part[0] == '-' || part[len(part)-1] == '-' {
			return false
		}
		for i := 0; i < len(part); i++ {
			if c := part[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// ValidateLabels checks every label of m, adding errors under path.
func ValidateLabels(path string, m map[string]string, errs *FieldErrors) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := ValidateLabel(k, m[k]); err != nil {
			errs.add(path, "%v", err)
		}
	}
}
