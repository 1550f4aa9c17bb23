package recommend

import "errors"

// Errors of Recommend.
var (
	// ErrNothingToRecommend: no edge of the namespace (or of the service)
	// carries allowed, successful traffic, so there is no policy to write;
	// an empty policy set would deny everything.
	ErrNothingToRecommend = errors.New("nothing to recommend")
	// ErrInvalidOptions: Options are not valid; the error names the field.
	ErrInvalidOptions = errors.New("invalid options")
)
