package config

import (
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
