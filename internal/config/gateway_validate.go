package config

// Validate implements Object.
func (g *Gateway) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&g.Metadata, &errs)
	return errs
}

// Validate implements Object.
func (s *Secret) Validate() FieldErrors {
	var errs FieldErrors
	validateMeta(&s.Metadata, &errs)
	return errs
}
