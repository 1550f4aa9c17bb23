package graph_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bulwarkmesh/bulwark/internal/graph"
)

func TestTemplate(t *testing.T) {
	long := "/" + strings.Repeat("abcdefgh/", 40)
	for _, c := range []struct {
		name, in, want string
	}{
		{"empty_tunnel", "", ""},
		{"root", "/", "/"},
		{"words_stay", "/api/v2/items", "/api/v2/items"},
		{"digits", "/items/12345", "/items/*"},
		{"digits_middle", "/users/42/orders/7", "/users/*/orders/*"},
		{"trailing_slash", "/items/1/", "/items/*/"},
		{"uuid", "/users/3f2a9b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c/profile", "/users/*/profile"},
		{"uuid_upper", "/u/3F2A9B1C-0D4E-4F5A-8B6C-7D8E9F0A1B2C", "/u/*"},
		{"hex8", "/commits/3f2a9b1c", "/commits/*"},
		{"hex40", "/git/da39a3ee5e6b4b0d3255bfef95601890afd80709", "/git/*"},
		{"hex_word_without_digits_stays", "/deadbeef", "/deadbeef"},
		{"short_hex_stays", "/abc123", "/abc123"},
		{"base64url_token", "/files/q83vEjRWeJCrze8SNFZ4kA", "/files/*"},
		{"token_mostly_digits", "/o/ord_1234567890123456", "/o/*"},
		{"jwt", "/t/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "/t/*"},
		{"slug_stays", "/articles/my-article-2024-edition", "/articles/my-article-2024-edition"},
		{"camel_case_stays", "/XMLHttpRequestHandler", "/XMLHttpRequestHandler"},
		{"version_stays", "/installation-guide-v2", "/installation-guide-v2"},
		{"query_cut", "/items/1?token=secret", "/items/*"},
		{"fragment_cut", "/a#frag", "/a"},
		{"percent_encoded_stays", "/a%20b", "/a%20b"},
		{"long_cut", long, long[:graph.MaxPath]},
		{"long_templated_cut", "/1" + long, ("/*" + long)[:graph.MaxPath]},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := graph.Template(c.in); got != c.want {
				t.Errorf("Template(%q): got %q, want %q", c.in, got, c.want)
			}
		})
	}
}

// TestTemplateNoAllocation: a path without identifier segments is not
// copied.
func TestTemplateNoAllocation(t *testing.T) {
	for _, p := range []string{"/api/v2/items", "/", "/a/b/c/d/e/f", "/health"} {
		if n := testing.AllocsPerRun(100, func() { _ = graph.Template(p) }); n != 0 {
			t.Errorf("Template(%q): got %v allocations, want 0", p, n)
		}
	}
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"", "/", "/items/1", "/a/3f2a9b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c", "/t/eyJa.b.c", "/é/1", "/a?b#c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got := graph.Template(p)
		if len(got) > graph.MaxPath {
			t.Fatalf("Template(%q): %d bytes, want at most %d", p, len(got), graph.MaxPath)
		}
		if strings.ContainsAny(got, "?#") {
			t.Fatalf("Template(%q) = %q holds a query or fragment", p, got)
		}
		if utf8.ValidString(p) && !utf8.ValidString(got) {
			t.Fatalf("Template(%q) = %q is not UTF-8", p, got)
		}
		if again := graph.Template(got); again != got {
			t.Fatalf("Template is not idempotent: %q -> %q -> %q", p, got, again)
		}
		if strings.Count(got, "/") > strings.Count(p, "/") {
			t.Fatalf("Template(%q) = %q adds segments", p, got)
		}
	})
}

func BenchmarkTemplate(b *testing.B) {
	for _, c := range []struct{ name, path string }{
		{"static", "/api/v2/items/list"},
		{"identifier", "/api/v2/items/12345"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = graph.Template(c.path)
			}
		})
	}
}
