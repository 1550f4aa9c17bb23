package config

import (
	"fmt"
	"strings"
)

// FieldError is one problem with one field of a document.
type FieldError struct {
	// Path from the document root, such as "spec.rules[0].to.methods[1]".
	Path string
	// Msg says what is wrong, such as `unsupported value "GETT"`.
	Msg string
}

// Error implements error.
func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// FieldErrors is every problem found in one document.
type FieldErrors []FieldError

// Error implements error.
func (es FieldErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// add appends an error at path.
func (es *FieldErrors) add(path, format string, args ...any) {
	*es = append(*es, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// DocumentError is a problem with one document of a multi-document stream.
type DocumentError struct {
	// Index of the document in the stream, starting at 1.
	Index int
	// Kind and Ref ("namespace/name") of the document, when known.
	Kind string
	Ref  string
	// Err is the problem: FieldErrors, or a syntax error.
	Err error
}

// Error implements error.
func (e *DocumentError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "document %d", e.Index)
	if e.Kind != "" {
		fmt.Fprintf(&b, " (%s", e.Kind)
		if e.Ref != "" && e.Ref != "/" {
			fmt.Fprintf(&b, " %s", e.Ref)
		}
		b.WriteString(")")
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying error.
func (e *DocumentError) Unwrap() error { return e.Err }

// DocumentErrors is every failed document of a stream.
type DocumentErrors []*DocumentError

// Error implements error.
func (es DocumentErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}
