package telemetry_test

import (
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// jwt is a well-formed (unsigned-looking) JWT.
const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"

func newRedactor(t testing.TB) *telemetry.Redactor {
	t.Helper()
	r, err := telemetry.NewRedactor([]string{"X-Custom-Secret", "X-Tenant"}, []string{"ssn", "Magic"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRedactorHeader(t *testing.T) {
	r := newRedactor(t)
	tests := []struct {
		name, header, value, want string
	}{
		{"authorization", "Authorization", "Bearer abc", telemetry.Redacted},
		{"authorization_lower", "authorization", "anything", telemetry.Redacted},
		{"proxy_authorization", "Proxy-Authorization", "Basic dXNlcjpwdw==", telemetry.Redacted},
		{"cookie", "Cookie", "sid=1", telemetry.Redacted},
		{"set_cookie", "Set-Cookie", "sid=1; HttpOnly", telemetry.Redacted},
		{"x_api_key", "X-Api-Key", "k", telemetry.Redacted},
		{"x_auth_token", "X-Auth-Token", "k", telemetry.Redacted},
		{"contains_token", "X-Amz-Security-Token", "k", telemetry.Redacted},
		{"contains_session", "X-Session-Id", "k", telemetry.Redacted},
		{"contains_password", "X-Db-Password", "k", telemetry.Redacted},
		{"contains_key", "Sec-WebSocket-Key", "k", telemetry.Redacted},
		{"configured", "x-custom-secret", "k", telemetry.Redacted},
		{"configured_plain_name", "X-Tenant", "acme", telemetry.Redacted},
		{"plain", "X-Request-Id", "abc-123", "abc-123"},
		{"plain_with_jwt", "X-Forwarded-Thing", "v=" + jwt, telemetry.Redacted},
		{"plain_with_bearer", "X-Other", "bearer abc.def", telemetry.Redacted},
		{"user_agent", "User-Agent", "curl/8.5.0", "curl/8.5.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Header(tt.header, tt.value); got != tt.want {
				t.Errorf("Header(%q, %q): got %q, want %q", tt.header, tt.value, got, tt.want)
			}
		})
	}
}

func TestRedactorQuery(t *testing.T) {
	r := newRedactor(t)
	R := telemetry.Redacted
	tests := []struct {
		name, query, want string
	}{
		{"empty", "", ""},
		{"plain", "page=2&sort=asc", "page=2&sort=asc"},
		{"token", "token=s3cr3t&page=2", "token=" + R + "&page=2"},
		{"case", "API_KEY=s3cr3t", "API_KEY=" + R},
		{"every_default", "password=a&passwd=b&pwd=c&access_token=d&refresh_token=e&id_token=f&apikey=g&key=h&secret=i&client_secret=j&code=k&signature=l&sig=m&auth=n",
			"password=" + R + "&passwd=" + R + "&pwd=" + R + "&access_token=" + R + "&refresh_token=" + R + "&id_token=" + R + "&apikey=" + R +
				"&key=" + R + "&secret=" + R + "&client_secret=" + R + "&code=" + R + "&signature=" + R + "&sig=" + R + "&auth=" + R},
		{"contains", "my_session_id=1&x=2", "my_session_id=" + R + "&x=2"},
		{"configured", "ssn=123-45&magic=x", "ssn=" + R + "&magic=" + R},
		{"encoded_name", "t%6Fken=s3cr3t", "t%6Fken=" + R},
		{"semicolon", "a=1;token=x", "a=1;token=" + R},
		{"jwt_value", "state=" + jwt, "state=" + R},
		{"bearer_value", "h=Bearer+abc123", "h=" + R},
		{"bearer_encoded", "h=Bearer%20abc123", "h=" + R},
		{"jwt_no_name", jwt + "&a=1", R + "&a=1"},
		{"empty_value", "token=&a=1", "token=&a=1"},
		{"repeated", "token=a&token=b", "token=" + R + "&token=" + R},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Query(tt.query); got != tt.want {
				t.Errorf("Query(%q): got %q, want %q", tt.query, got, tt.want)
			}
		})
	}
}

func TestRedactorPath(t *testing.T) {
	r := telemetry.DefaultRedactor()
	R := telemetry.Redacted
	tests := []struct {
		name, path, want string
	}{
		{"root", "/", "/"},
		{"plain", "/api/v1/items/42", "/api/v1/items/42"},
		{"jwt_segment", "/callback/" + jwt + "/done", "/callback/" + R + "/done"},
		{"jwt_inside_segment", "/t=" + jwt, "/" + R},
		{"encoded_bearer", "/x/Bearer%20abc", "/x/" + R},
		{"eyj_not_jwt", "/eyJust/kidding", "/eyJust/kidding"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Path(tt.path); got != tt.want {
				t.Errorf("Path(%q): got %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

func TestRedactorText(t *testing.T) {
	r := telemetry.DefaultRedactor()
	R := telemetry.Redacted
	tests := []struct {
		name, text, want string
	}{
		{"plain", "connection refused", "connection refused"},
		{"bearer", "got Authorization: Bearer abc.def.ghi, refused", "got Authorization: Bearer " + R + ", refused"},
		{"basic_tab", "Basic\tdXNlcjpwdw==", "Basic\t" + R},
		{"jwt_twice", jwt + " and " + jwt, R + " and " + R},
		{"word_ending_in_basic", "nonbasic thing", "nonbasic thing"},
		{"scheme_alone", "Bearer", "Bearer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Text(tt.text); got != tt.want {
				t.Errorf("Text(%q): got %q, want %q", tt.text, got, tt.want)
			}
		})
	}
}

func TestLooksLikeJWT(t *testing.T) {
	tests := []struct {
		name string
		s    string
		want bool
	}{
		{"jws", jwt, true},
		{"unsigned", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", true},
		{"jwe_five_parts", "eyJhbGciOiJSU0EifQ.a.b.c.d", true},
		{"two_parts", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0", false},
		{"no_eyj", "abc.def.ghi", false},
		{"trailing_space", jwt + " ", false},
		{"short_header", "eyJ.a.b", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := telemetry.LooksLikeJWT(tt.s); got != tt.want {
				t.Errorf("LooksLikeJWT(%q): got %v, want %v", tt.s, got, tt.want)
			}
		})
	}
}

func TestNewRedactorRejects(t *testing.T) {
	tests := []struct {
		name           string
		headers, query []string
		want           string
	}{
		{"empty_header", []string{""}, nil, `redact-header ""`},
		{"space_in_header", []string{"X Bad"}, nil, `redact-header "X Bad"`},
		{"long_header", []string{strings.Repeat("x", 129)}, nil, "longer than 128"},
		{"ampersand_in_query", nil, []string{"a&b"}, `redact-query "a&b"`},
		{"empty_query", nil, []string{""}, `redact-query ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := telemetry.NewRedactor(tt.headers, tt.query)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestRedactorNoAllocs: nothing to mask, nothing allocated.
func TestRedactorNoAllocs(t *testing.T) {
	r := newRedactor(t)
	allocs := testing.AllocsPerRun(100, func() {
		_ = r.Query("page=2&sort=asc&q=hello%20world+again")
		_ = r.Path("/api/v1/items/42/eyJust")
		_ = r.Header("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)")
		_ = r.Text("dial tcp 127.0.0.1:1: connect: connection refused")
	})
	if allocs != 0 {
		t.Errorf("got %v allocations, want 0", allocs)
	}
}

func BenchmarkRedactor(b *testing.B) {
	r := newRedactor(b)
	b.Run("clean", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.Query("page=2&sort=asc&q=hello%20world")
			_ = r.Path("/api/v1/items/42")
			_ = r.Text("curl/8.5.0")
		}
	})
	b.Run("masked", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.Query("page=2&token=abc")
			_ = r.Path("/cb/" + jwt)
		}
	})
}

// FuzzJWTDetector: the detector never panics, a value it masks never
// shows in the result, and masking is idempotent.
func FuzzJWTDetector(f *testing.F) {
	for _, s := range []string{jwt, "Bearer x", "eyJ.a.b", "a=" + jwt + "&b", "basic", "eyJaaaa..", "%65yJ"} {
		f.Add(s)
	}
	r := telemetry.DefaultRedactor()
	f.Fuzz(func(t *testing.T, s string) {
		out := r.Text(s)
		if telemetry.HasCredential(out) && !strings.Contains(out, telemetry.Redacted) {
			t.Errorf("Text(%q) = %q still carries a credential", s, out)
		}
		if telemetry.LooksLikeJWT(s) && strings.Contains(out, s) {
			t.Errorf("Text(%q) kept the JWT", s)
		}
		if again := r.Text(out); again != out {
			t.Errorf("Text is not idempotent: %q -> %q -> %q", s, out, again)
		}
		_ = r.Query(s)
		_ = r.Path(s)
	})
}
