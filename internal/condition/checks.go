package condition

import (
	"fmt"
	"regexp"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
)

// headerCase finds the header names written with an upper-case letter in a
// checked expression (request.headers['X-Debug'], 'X-Debug' in
// request.headers, has(request.headers.X)): request.headers is keyed by
// lower-case names, so such a lookup could never find its header.
func headerCase(checked *cel.Ast) []Issue {
	native := checked.NativeRep()
	isHeaders := func(e ast.Expr) bool {
		r, ok := native.ReferenceMap()[e.ID()]
		return ok && r.Name == "request.headers"
	}
	var issues []Issue
	report := func(at ast.Expr, name string) {
		if name == strings.ToLower(name) {
			return
		}
		loc := native.SourceInfo().GetStartLocation(at.ID())
		issues = append(issues, Issue{
			Line:   loc.Line(),
			Column: loc.Column() + 1,
			Msg:    fmt.Sprintf("header %q can never be found: request.headers is keyed by lower-case names, use %q", name, strings.ToLower(name)),
		})
	}
	ast.PreOrderVisit(native.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		switch e.Kind() {
		case ast.CallKind:
			call := e.AsCall()
			args := call.Args()
			if len(args) != 2 {
				return
			}
			switch call.FunctionName() {
			case operators.Index, operators.OptIndex:
				if name, ok := literalString(args[1]); ok && isHeaders(args[0]) {
					report(args[1], name)
				}
			case operators.In:
				if name, ok := literalString(args[0]); ok && isHeaders(args[1]) {
					report(args[0], name)
				}
			}
		case ast.SelectKind:
			sel := e.AsSelect()
			if isHeaders(sel.Operand()) {
				report(e, sel.FieldName())
			}
		}
	}))
	return issues
}

// unbounded are the functions of the strings extension whose result can
// be far larger than their inputs (a header replaced into itself, a list
// of a hundred thousand references to one header joined): CEL charges
// their cost after building the result, too late to stop the allocation.
var unbounded = map[string]string{
	"replace": "its result can grow as the product of its inputs",
	"join":    "its result can grow as the product of its inputs",
	"format":  "its result can grow as the product of its inputs",
}

// restricted finds the calls a condition may not make: the unbounded
// functions, and matches with a pattern that is not a string literal (a
// pattern from the request would be compiled at every evaluation, and
// chosen by the caller).
func restricted(checked *cel.Ast) []Issue {
	native := checked.NativeRep()
	var issues []Issue
	ast.PreOrderVisit(native.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		if e.Kind() != ast.CallKind {
			return
		}
		call := e.AsCall()
		at := e
		msg := ""
		if why, ok := unbounded[call.FunctionName()]; ok {
			msg = fmt.Sprintf("%s is not available in conditions: %s", call.FunctionName(), why)
		} else if call.FunctionName() == "matches" && len(call.Args()) > 0 {
			pattern := call.Args()[len(call.Args())-1]
			at = pattern
			if re, ok := literalString(pattern); !ok {
				msg = "the pattern of matches must be a string literal"
			} else if _, err := regexp.Compile(re); err != nil {
				msg = fmt.Sprintf("invalid pattern for matches (RE2 syntax): %v", err)
			}
		}
		if msg == "" {
			return
		}
		loc := native.SourceInfo().GetStartLocation(at.ID())
		issues = append(issues, Issue{Line: loc.Line(), Column: loc.Column() + 1, Msg: msg})
	}))
	return issues
}

// literalString returns the value of a string literal.
func literalString(e ast.Expr) (string, bool) {
	if e.Kind() != ast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}
