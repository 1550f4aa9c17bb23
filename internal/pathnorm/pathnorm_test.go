package pathnorm_test

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/pathnorm"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		// Already normalized: returned as is.
		{name: "root", in: "/", want: "/"},
		{name: "simple", in: "/admin", want: "/admin"},
		{name: "trailing_slash_kept", in: "/a/b/", want: "/a/b/"},
		{name: "case_sensitive", in: "/A", want: "/A"},
		{name: "matrix_params_kept", in: "/admin;x=1", want: "/admin;x=1"},
		{name: "sub_delims_colon_at_kept", in: "/a:b@c!$&'()*+,=", want: "/a:b@c!$&'()*+,="},
		{name: "upper_escape_of_reserved_kept", in: "/a%3Fb%23c%25", want: "/a%3Fb%23c%25"},
		{name: "dots_inside_segment_kept", in: "/a..b/.c/..d/...", want: "/a..b/.c/..d/..."},

		// Dot segments.
		{name: "dotdot_climbs", in: "/public/../admin", want: "/admin"},
		{name: "dotdot_clamped_at_root", in: "/../a", want: "/a"},
		{name: "dotdot_many_clamped", in: "/a/../../../b", want: "/b"},
		{name: "dotdot_only", in: "/..", want: "/"},
		{name: "dot_only", in: "/.", want: "/"},
		{name: "dotdot_last_keeps_slash", in: "/a/b/..", want: "/a/"},
		{name: "dot_last_keeps_slash", in: "/a/.", want: "/a/"},
		{name: "dotdot_slash_last", in: "/a/b/../", want: "/a/"},
		{name: "dot_middle", in: "/a/./b", want: "/a/b"},
		{name: "dot_slash_merge_mix", in: "/a/./b//c/", want: "/a/b/c/"},
		{name: "dotdot_to_root_keeps_root", in: "/a/..", want: "/"},

		// Merged slashes.
		{name: "double_slash_leading", in: "//admin", want: "/admin"},
		{name: "double_slash_only", in: "//", want: "/"},
		{name: "slash_run_middle", in: "/a///b", want: "/a/b"},
		{name: "slash_run_trailing", in: "/a//", want: "/a/"},
		{name: "slash_then_dotdot", in: "/a/..//b", want: "/b"},

		// Escapes.
		{name: "encoded_unreserved_decoded", in: "/%61dmin", want: "/admin"},
		{name: "encoded_upper_letter_decoded", in: "/%41", want: "/A"},
		{name: "encoded_tilde_dash_underscore_decoded", in: "/%7E%2D%5F%30", want: "/~-_0"},
		{name: "encoded_dotdot_lower", in: "/%2e%2e/admin", want: "/admin"},
		{name: "encoded_dotdot_upper", in: "/x/%2E%2E/admin", want: "/admin"},
		{name: "encoded_dot_mixed", in: "/x/.%2e/admin", want: "/admin"},
		{name: "encoded_dot_segment", in: "/a/%2e/b", want: "/a/b"},
		{name: "lower_hex_upper_cased", in: "/caf%c3%a9", want: "/caf%C3%A9"},
		{name: "encoded_percent_not_decoded_twice", in: "/%252e%252e/admin", want: "/%252e%252e/admin"},
		{name: "encoded_space_kept", in: "/a%20b", want: "/a%20b"},
		{name: "encoded_semicolon_kept", in: "/admin%3bx", want: "/admin%3Bx"},

		// Rejections.
		{name: "empty", in: "", wantErr: pathnorm.ErrNotAbsolute},
		{name: "relative", in: "admin", wantErr: pathnorm.ErrNotAbsolute},
		{name: "asterisk", in: "*", wantErr: pathnorm.ErrNotAbsolute},
		{name: "encoded_slash_lower_trailing", in: "/admin%2f", wantErr: pathnorm.ErrEncodedSlash},
		{name: "encoded_slash_then_dotdot", in: "/admin%2F..", wantErr: pathnorm.ErrEncodedSlash},
		{name: "encoded_slash_middle", in: "/a%2fb", wantErr: pathnorm.ErrEncodedSlash},
		{name: "encoded_backslash_lower", in: "/a%5cb", wantErr: pathnorm.ErrEncodedBackslash},
		{name: "encoded_backslash_upper", in: "/a%5Cb", wantErr: pathnorm.ErrEncodedBackslash},
		{name: "raw_backslash", in: "/a\\b", wantErr: pathnorm.ErrBackslash},
		{name: "encoded_nul", in: "/a%00", wantErr: pathnorm.ErrNUL},
		{name: "raw_nul", in: "/a\x00b", wantErr: pathnorm.ErrNUL},
		{name: "raw_tab", in: "/a\tb", wantErr: pathnorm.ErrControl},
		{name: "raw_newline", in: "/a\nb", wantErr: pathnorm.ErrControl},
		{name: "raw_del", in: "/a\x7f", wantErr: pathnorm.ErrControl},
		{name: "encoded_cr", in: "/a%0d", wantErr: pathnorm.ErrControl},
		{name: "encoded_unit_separator", in: "/a%1F", wantErr: pathnorm.ErrControl},
		{name: "encoded_del", in: "/a%7f", wantErr: pathnorm.ErrControl},
		{name: "bad_escape_not_hex", in: "/a%zz", wantErr: pathnorm.ErrBadEscape},
		{name: "bad_escape_one_digit", in: "/a%4", wantErr: pathnorm.ErrBadEscape},
		{name: "bad_escape_bare_percent", in: "/a%", wantErr: pathnorm.ErrBadEscape},
		{name: "bad_escape_second_not_hex", in: "/a%4g", wantErr: pathnorm.ErrBadEscape},
		{name: "raw_space", in: "/a b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_quote", in: "/a\"b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_less_than", in: "/a<b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_greater_than", in: "/a>b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_caret", in: "/a^b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_backtick", in: "/a`b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_left_brace", in: "/a{b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_pipe", in: "/a|b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_right_brace", in: "/a}b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_hash", in: "/a#b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_question_mark", in: "/a?b", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_non_ascii", in: "/café", wantErr: pathnorm.ErrInvalidChar},
		{name: "raw_high_byte", in: "/a\xffb", wantErr: pathnorm.ErrInvalidChar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pathnorm.Normalize(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Normalize(%q) = %q, %v; want error %v", tt.in, got, err, tt.wantErr)
				}
				if !errors.Is(err, pathnorm.ErrRejected) {
					t.Errorf("Normalize(%q) error %v does not wrap ErrRejected", tt.in, err)
				}
				if got != "" {
					t.Errorf("Normalize(%q) = %q with an error, want \"\"", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Normalize(%q) error: got %v, want nil", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Normalize(%q): got %q, want %q", tt.in, got, tt.want)
			}
			if ref := refNormalize(tt.in); got != ref {
				t.Errorf("Normalize(%q): got %q, reference says %q", tt.in, got, ref)
			}
			again, err := pathnorm.Normalize(got)
			if err != nil || again != got {
				t.Errorf("Normalize(%q) = %q, %v; want the fixed point %q", got, again, err, got)
			}
		})
	}
}

func TestNormalizeDoesNotAllocateWhenNormalized(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{name: "root", in: "/"},
		{name: "plain", in: "/api/v1/users/42"},
		{name: "trailing_slash", in: "/public/"},
		{name: "upper_escapes", in: "/caf%C3%A9/%20x"},
		{name: "sub_delims", in: "/a;b=c/d:e@f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			allocs := testing.AllocsPerRun(100, func() {
				got, _ = pathnorm.Normalize(tt.in)
			})
			if allocs != 0 {
				t.Errorf("Normalize(%q) allocations: got %v, want 0", tt.in, allocs)
			}
			if got != tt.in {
				t.Errorf("Normalize(%q): got %q, want the input", tt.in, got)
			}
		})
	}
}

func TestSplitTarget(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantPath  string
		wantQuery string
		wantErr   error
	}{
		{name: "path_only", in: "/a/b", wantPath: "/a/b"},
		{name: "root", in: "/", wantPath: "/"},
		{name: "with_query", in: "/a?x=1&y=2", wantPath: "/a", wantQuery: "x=1&y=2"},
		{name: "empty_query", in: "/a?", wantPath: "/a"},
		{name: "question_mark_in_query", in: "/a?x=?", wantPath: "/a", wantQuery: "x=?"},
		{name: "path_not_checked", in: "/../a%2f?q", wantPath: "/../a%2f", wantQuery: "q"},
		{name: "double_slash_is_origin_form", in: "//evil.example/a", wantPath: "//evil.example/a"},
		{name: "empty", in: "", wantErr: pathnorm.ErrNotOriginForm},
		{name: "asterisk_form", in: "*", wantErr: pathnorm.ErrNotOriginForm},
		{name: "absolute_form", in: "http://example.com/a", wantErr: pathnorm.ErrNotOriginForm},
		{name: "authority_form", in: "example.com:443", wantErr: pathnorm.ErrNotOriginForm},
		{name: "query_only", in: "?a", wantErr: pathnorm.ErrNotOriginForm},
		{name: "fragment", in: "/a#frag", wantErr: pathnorm.ErrFragment},
		{name: "fragment_in_query", in: "/a?x#frag", wantErr: pathnorm.ErrFragment},
		{name: "space_in_query", in: "/a?x y", wantErr: pathnorm.ErrInvalidQuery},
		{name: "control_in_query", in: "/a?x\r\nHost: evil", wantErr: pathnorm.ErrInvalidQuery},
		{name: "del_in_query", in: "/a?x\x7f", wantErr: pathnorm.ErrInvalidQuery},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, query, err := pathnorm.SplitTarget(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, pathnorm.ErrRejected) {
					t.Fatalf("SplitTarget(%q) error: got %v, want %v wrapping ErrRejected", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("SplitTarget(%q) error: got %v, want nil", tt.in, err)
			}
			if path != tt.wantPath || query != tt.wantQuery {
				t.Errorf("SplitTarget(%q): got (%q, %q), want (%q, %q)", tt.in, path, query, tt.wantPath, tt.wantQuery)
			}
		})
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"/", "//", "/public/../admin", "//admin", "/%61dmin", "/admin%2f", "/admin%2F..",
		"/a/./b//c/", "/%2e%2e/admin", "/a%2fb", "/a%5cb", "/a\\b", "/a%00", "/a%zz", "/a%4",
		"/caf%c3%a9", "/a b", "", "admin", "/A", "/a/b/..", "/a/.", "/.%2E/", "/%252e",
		"/a;b=c", "/..//..", "/%7e%7E", "/public/..;/admin", "/.;x", "/%2e%2E;/", "/...;/", "/.a;/",
	} {
		f.Add(s)
	}
	syntax := regexp.MustCompile(refSyntax)
	f.Fuzz(func(t *testing.T, in string) {
		out, err := pathnorm.Normalize(in)
		if valid := refValid(syntax, in); (err == nil) != valid {
			t.Fatalf("Normalize(%q) error: got %v, reference validity %v", in, err, valid)
		}
		if err != nil {
			if !errors.Is(err, pathnorm.ErrRejected) {
				t.Fatalf("Normalize(%q) error %v does not wrap ErrRejected", in, err)
			}
			return
		}
		if again, err := pathnorm.Normalize(out); err != nil || again != out {
			t.Fatalf("Normalize(%q) = %q; Normalize of that: got %q, %v, want the fixed point", in, out, again, err)
		}
		if ref := refNormalize(in); out != ref {
			t.Fatalf("Normalize(%q): got %q, reference says %q", in, out, ref)
		}
		if !strings.HasPrefix(out, "/") {
			t.Fatalf("Normalize(%q) = %q: want a leading '/'", in, out)
		}
		for _, bad := range []string{"//", "/./", "/../"} {
			if strings.Contains(out, bad) {
				t.Fatalf("Normalize(%q) = %q: contains %q", in, out, bad)
			}
		}
		if strings.HasSuffix(out, "/.") || strings.HasSuffix(out, "/..") {
			t.Fatalf("Normalize(%q) = %q: ends with a dot segment", in, out)
		}
		for i := 0; i < len(out); i++ {
			if out[i] != '%' {
				continue
			}
			esc := out[i+1 : i+3]
			if esc != strings.ToUpper(esc) {
				t.Fatalf("Normalize(%q) = %q: escape %%%s is not upper case", in, out, esc)
			}
			if v, _ := strconv.ParseUint(esc, 16, 8); refUnreserved(byte(v)) {
				t.Fatalf("Normalize(%q) = %q: escape %%%s of an unreserved character", in, out, esc)
			}
		}
	})
}

// refSyntax is RFC 3986 path-absolute syntax (with empty segments allowed).
const refSyntax = `^/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$`

// refValid is an independent statement of which paths Normalize accepts;
// syntax is refSyntax compiled.
func refValid(syntax *regexp.Regexp, p string) bool {
	if !syntax.MatchString(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			continue
		}
		v, _ := strconv.ParseUint(p[i+1:i+3], 16, 8)
		if v == '/' || v == '\\' || v < 0x20 || v == 0x7f {
			return false
		}
		i += 2
	}
	// A "." or ".." segment with ';' parameters is refused: servlet
	// containers strip the parameters and then resolve the dots.
	for _, seg := range strings.Split(refDecode(p), "/") {
		if head, _, ok := strings.Cut(seg, ";"); ok && (head == "." || head == "..") {
			return false
		}
	}
	return true
}

// refDecode decodes the escapes of unreserved characters of a valid path
// and upper-cases the others.
func refDecode(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		v, _ := strconv.ParseUint(p[i+1:i+3], 16, 8)
		if refUnreserved(byte(v)) {
			b.WriteByte(byte(v))
		} else {
			b.WriteString("%" + strings.ToUpper(p[i+1:i+3]))
		}
		i += 2
	}
	return b.String()
}

// refUnreserved reports whether c is an RFC 3986 unreserved character.
func refUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0
}

// refNormalize is a slow, independent statement of the normalization of a
// valid path: decode, then split into segments and resolve them.
func refNormalize(p string) string {
	segs := strings.Split(refDecode(p)[1:], "/")
	var out []string
	for _, s := range segs {
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	res := "/" + strings.Join(out, "/")
	if last := segs[len(segs)-1]; len(out) > 0 && (last == "" || last == "." || last == "..") {
		res += "/"
	}
	return res
}
