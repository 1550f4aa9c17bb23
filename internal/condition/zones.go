package condition

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/env"
	"cel.dev/cel-go/common/functions"
	"cel.dev/cel-go/common/overloads"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
)

// The timestamp accessors of CEL's standard library that take a time zone
// (getHours('Europe/Paris')) load it with time.LoadLocation, which reads
// the zone database from disk at every call. This package replaces them
// with overloads of the same signature that only accept a string literal,
// loaded once by Compile, so that evaluation does no I/O.

// zoneAccessor is one timestamp accessor that takes a time zone.
type zoneAccessor struct {
	function string // CEL function name
	stdID    string // the standard library's overload, removed
	get      func(time.Time) int64
}

// zoneAccessors are the accessors, with CEL's semantics (getMonth,
// getDayOfYear, getDayOfMonth are 0-based; getDate is 1-based).
var zoneAccessors = []zoneAccessor{
	{overloads.TimeGetFullYear, overloads.TimestampToYearWithTz, func(t time.Time) int64 { return int64(t.Year()) }},
	{overloads.TimeGetMonth, overloads.TimestampToMonthWithTz, func(t time.Time) int64 { return int64(t.Month()) - 1 }},
	{overloads.TimeGetDayOfYear, overloads.TimestampToDayOfYearWithTz, func(t time.Time) int64 { return int64(t.YearDay()) - 1 }},
	{overloads.TimeGetDayOfMonth, overloads.TimestampToDayOfMonthZeroBasedWithTz, func(t time.Time) int64 { return int64(t.Day()) - 1 }},
	{overloads.TimeGetDate, overloads.TimestampToDayOfMonthOneBasedWithTz, func(t time.Time) int64 { return int64(t.Day()) }},
	{overloads.TimeGetDayOfWeek, overloads.TimestampToDayOfWeekWithTz, func(t time.Time) int64 { return int64(t.Weekday()) }},
	{overloads.TimeGetHours, overloads.TimestampToHoursWithTz, func(t time.Time) int64 { return int64(t.Hour()) }},
	{overloads.TimeGetMinutes, overloads.TimestampToMinutesWithTz, func(t time.Time) int64 { return int64(t.Minute()) }},
	{overloads.TimeGetSeconds, overloads.TimestampToSecondsWithTz, func(t time.Time) int64 { return int64(t.Second()) }},
	{overloads.TimeGetMilliseconds, overloads.TimestampToMillisecondsWithTz, func(t time.Time) int64 { return int64(t.Nanosecond() / 1e6) }},
}

// zoneOverloadID is the ID of this package's replacement of a standard
// overload.
func zoneOverloadID(a zoneAccessor) string { return "bulwark_" + a.stdID }

// stdLibWithoutZones is the standard library without the accessors that
// take a time zone.
func stdLibWithoutZones() *env.LibrarySubset {
	sub := &env.LibrarySubset{}
	for _, a := range zoneAccessors {
		sub.ExcludeFunctions = append(sub.ExcludeFunctions, &env.Function{
			Name:      a.function,
			Overloads: []*env.Overload{{ID: a.stdID}},
		})
	}
	return sub
}

// zoneFunctions declares the replacements; their implementations are
// bound per program by zoneOverloads, over the zones of its literals.
func zoneFunctions() cel.EnvOption {
	opts := make([]cel.EnvOption, len(zoneAccessors))
	for i, a := range zoneAccessors {
		opts[i] = cel.Function(a.function,
			cel.MemberOverload(zoneOverloadID(a), []*cel.Type{cel.TimestampType, cel.StringType}, cel.IntType))
	}
	return func(e *cel.Env) (*cel.Env, error) {
		var err error
		for _, o := range opts {
			if e, err = o(e); err != nil {
				return nil, err
			}
		}
		return e, nil
	}
}

// isZoneOverload reports whether id is one of the replacements.
func isZoneOverload(id string) bool {
	for _, a := range zoneAccessors {
		if id == zoneOverloadID(a) {
			return true
		}
	}
	return false
}

// timeZones finds the time zones of the accessor calls of a checked
// expression and loads them; a zone that is not a string literal, or not a
// known zone, is an issue.
func timeZones(checked *cel.Ast) (map[string]*time.Location, []Issue) {
	native := checked.NativeRep()
	zones := map[string]*time.Location{}
	var issues []Issue
	ast.PreOrderVisit(native.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		if e.Kind() != ast.CallKind {
			return
		}
		zoned := false
		for _, id := range native.GetOverloadIDs(e.ID()) {
			if isZoneOverload(id) {
				zoned = true
			}
		}
		call := e.AsCall()
		if !zoned || len(call.Args()) != 1 {
			return
		}
		arg := call.Args()[0]
		loc := native.SourceInfo().GetStartLocation(arg.ID())
		issue := func(format string, args ...any) {
			issues = append(issues, Issue{Line: loc.Line(), Column: loc.Column() + 1, Msg: fmt.Sprintf(format, args...)})
		}
		if arg.Kind() != ast.LiteralKind {
			issue("the time zone of %s must be a string literal, such as 'Europe/Paris' or '+01:00'", call.FunctionName())
			return
		}
		name, ok := arg.AsLiteral().(types.String)
		if !ok {
			issue("the time zone of %s must be a string literal", call.FunctionName())
			return
		}
		z, err := loadZone(string(name))
		if err != nil {
			issue("%v", err)
			return
		}
		zones[string(name)] = z
	}))
	return zones, issues
}

// loadZone loads an IANA time zone name, or parses an offset "[+-]HH:MM".
// "Local" and "" are refused: a policy must not depend on the machine.
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("unknown time zone %q: use an IANA name such as 'Europe/Paris' or an offset such as '+01:00'", name)
	}
	if h, m, ok := strings.Cut(name, ":"); ok {
		hr, err1 := strconv.Atoi(h)
		mn, err2 := strconv.Atoi(m)
		if err1 != nil || err2 != nil || hr < -23 || hr > 23 || mn < 0 || mn > 59 || len(m) != 2 {
			return nil, fmt.Errorf("invalid time zone offset %q: want [+-]HH:MM, at most 23:59", name)
		}
		off := hr*3600 + mn*60
		if strings.HasPrefix(h, "-") {
			off = hr*3600 - mn*60
		}
		return time.FixedZone(name, off), nil
	}
	z, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q: use an IANA name such as 'Europe/Paris' or an offset such as '+01:00'", name)
	}
	return z, nil
}

// zoneOverloads binds the replacements for one program, over its zones.
func zoneOverloads(zones map[string]*time.Location) []*functions.Overload {
	out := make([]*functions.Overload, len(zoneAccessors))
	for i, a := range zoneAccessors {
		get := a.get
		out[i] = &functions.Overload{
			Operator: zoneOverloadID(a),
			Binary: func(ts, tz ref.Val) ref.Val {
				t, ok := ts.(types.Timestamp)
				if !ok {
					return types.MaybeNoSuchOverloadErr(ts)
				}
				name, ok := tz.(types.String)
				if !ok {
					return types.MaybeNoSuchOverloadErr(tz)
				}
				z := zones[string(name)]
				if z == nil {
					return types.NewErr("time zone %q was not loaded at compile time", string(name))
				}
				return types.Int(get(t.Time.In(z)))
			},
		}
	}
	return out
}

// stringsExtension is CEL's strings extension, at a pinned version so that
// upgrading cel-go does not change the language.
func stringsExtension() cel.EnvOption { return ext.Strings(ext.StringsVersion(5)) }

// networkExtension is CEL's network extension (ip, cidr), pinned.
func networkExtension() cel.EnvOption { return ext.Network(ext.NetworkVersion(1)) }
