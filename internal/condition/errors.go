package condition

import (
	"fmt"
	"strings"
)

// Errors of Eval.

// ErrCostLimit means that an evaluation was stopped because it cost more
// than CostLimit.
var ErrCostLimit = fmt.Errorf("cost limit of %d exceeded", CostLimit)

// Errors of Compile.

// CompileError is why Compile rejected an expression: one Issue per
// problem found.
type CompileError struct {
	Issues []Issue
}

// Error implements error: one line per issue.
func (e *CompileError) Error() string {
	lines := make([]string, len(e.Issues))
	for i, is := range e.Issues {
		lines[i] = is.String()
	}
	return strings.Join(lines, "\n")
}

// capped keeps the first maxIssues issues, and says how many it dropped.
func (e *CompileError) capped() *CompileError {
	if len(e.Issues) <= maxIssues {
		return e
	}
	n := len(e.Issues) - maxIssues
	e.Issues = append(e.Issues[:maxIssues:maxIssues], Issue{Msg: fmt.Sprintf("and %d more", n)})
	return e
}

// Issue is one problem in an expression.
type Issue struct {
	// Line and Column of the problem, both starting at 1; 0 when it
	// concerns the whole expression (such as its length).
	Line, Column int
	// Msg says what is wrong, such as "undeclared reference to
	// 'request.methd' (did you mean 'request.method'?)".
	Msg string
}

// String returns "line:column: message", or the message alone when the
// issue has no position.
func (i Issue) String() string {
	if i.Line == 0 {
		return i.Msg
	}
	return fmt.Sprintf("%d:%d: %s", i.Line, i.Column, i.Msg)
}
