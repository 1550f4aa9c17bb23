package policycheck

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/bulwarkmesh/bulwark/internal/config"
)

// Severity says how much a finding matters.
type Severity string

// Severities, from the most to the least serious.
const (
	// SeverityError: the documents cannot be applied as they are.
	SeverityError Severity = "error"
	// SeverityWarning: the documents apply, but a rule does not do what it
	// appears to do (`bulwark policy lint --strict` fails on these too).
	SeverityWarning Severity = "warning"
	// SeverityInfo: a reminder.
	SeverityInfo Severity = "info"
)

// rank orders severities, most serious first.
func (s Severity) rank() int {
	switch s {
	case SeverityError:
		return 0
	case SeverityWarning:
		return 1
	}
	return 2
}

// Check names what a finding is about, a short stable word for scripts.
type Check string

// Checks; the package documentation says what each detects.
const (
	CheckInvalid      Check = "invalid"
	CheckDuplicate    Check = "duplicate"
	CheckUnreachable  Check = "unreachable"
	CheckNeverMatches Check = "never-matches"
	CheckShadowed     Check = "shadowed"
	CheckTooWide      Check = "too-wide"
	CheckDryRun       Check = "dry-run"
)

// Finding is one result of Lint or DecodeFindings.
type Finding struct {
	Severity Severity `json:"severity"`
	Check    Check    `json:"check"`
	// File the document came from; "" when unknown.
	File string `json:"file,omitempty"`
	// Document is the index of the document in File, from 1; 0 when the
	// finding is about the whole file.
	Document int `json:"document,omitempty"`
	// Policy is "namespace/name" of the policy; "" when unknown.
	Policy string `json:"policy,omitempty"`
	// Path is the field path from the document root, such as
	// "spec.rules[0].to.methods[1]"; "" for the whole document.
	Path string `json:"path,omitempty"`
	// Message says what is wrong and, where it can, what to do.
	Message string `json:"message"`
}

// String returns the finding on one line:
// "file:doc: severity: policy: path: message (check)".
func (f Finding) String() string {
	var b strings.Builder
	if f.File != "" {
		b.WriteString(f.File)
		if f.Document > 0 {
			b.WriteString(" document ")
			b.WriteString(strconv.Itoa(f.Document))
		}
		b.WriteString(": ")
	}
	b.WriteString(string(f.Severity))
	b.WriteString(": ")
	if f.Policy != "" {
		b.WriteString(f.Policy)
		b.WriteString(": ")
	}
	if f.Path != "" {
		b.WriteString(f.Path)
		b.WriteString(": ")
	}
	b.WriteString(f.Message)
	b.WriteString(" (")
	b.WriteString(string(f.Check))
	b.WriteString(")")
	return b.String()
}

// SortFindings sorts findings by file, document, path, severity and
// message, so that output does not depend on the order checks run in.
func SortFindings(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(
			strings.Compare(a.File, b.File),
			cmp.Compare(a.Document, b.Document),
			comparePaths(a.Path, b.Path),
			cmp.Compare(a.Severity.rank(), b.Severity.rank()),
			strings.Compare(string(a.Check), string(b.Check)),
			strings.Compare(a.Message, b.Message),
		)
	})
}

// comparePaths orders field paths so that "rules[2]" sorts before
// "rules[10]".
func comparePaths(a, b string) int {
	for a != "" && b != "" {
		ia, ib := strings.IndexByte(a, '['), strings.IndexByte(b, '[')
		if ia < 0 || ib < 0 || a[:ia] != b[:ib] {
			break
		}
		ja, jb := strings.IndexByte(a[ia:], ']'), strings.IndexByte(b[ib:], ']')
		if ja < 0 || jb < 0 {
			break
		}
		na, nb := a[ia+1:ia+ja], b[ib+1:ib+jb]
		if na != nb {
			if len(na) != len(nb) {
				return cmp.Compare(len(na), len(nb))
			}
			return strings.Compare(na, nb)
		}
		a, b = a[ia+ja+1:], b[ib+jb+1:]
	}
	return strings.Compare(a, b)
}

// Count returns how many findings have each severity.
func Count(fs []Finding) (errs, warnings, infos int) {
	for _, f := range fs {
		switch f.Severity {
		case SeverityError:
			errs++
		case SeverityWarning:
			warnings++
		default:
			infos++
		}
	}
	return errs, warnings, infos
}

// DecodeFindings turns the error of config.Decode for file into error
// findings: one per field error, each with its document index, the policy
// when known, and its field path (CEL errors carry their position in the
// message). An error that is not a config.DocumentErrors becomes one
// finding about the whole file. A nil error gives no findings.
func DecodeFindings(file string, err error) []Finding {
	if err == nil {
		return nil
	}
	var des config.DocumentErrors
	if !errors.As(err, &des) {
		var de *config.DocumentError
		if !errors.As(err, &de) {
			return []Finding{{Severity: SeverityError, Check: CheckInvalid, File: file, Message: err.Error()}}
		}
		des = config.DocumentErrors{de}
	}
	var out []Finding
	for _, de := range des {
		ref := ""
		if de.Kind != "" && de.Ref != "" && de.Ref != "/" {
			ref = de.Ref
		}
		var fes config.FieldErrors
		if !errors.As(de.Err, &fes) || len(fes) == 0 {
			out = append(out, Finding{Severity: SeverityError, Check: CheckInvalid, File: file, Document: de.Index,
				Policy: ref, Message: de.Err.Error()})
			continue
		}
		for _, fe := range fes {
			out = append(out, Finding{Severity: SeverityError, Check: CheckInvalid, File: file, Document: de.Index,
				Policy: ref, Path: fe.Path, Message: fe.Msg})
		}
	}
	return out
}
