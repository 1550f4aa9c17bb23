package telemetry_test

// Attack tests of the Redactor: the encodings and placements a client can
// pick to slip a secret past it.

import (
	"strings"
	"testing"

	"github.com/bulwarkmesh/bulwark/internal/telemetry"
)

// attackSecret is the secret every case hides; it must appear in no output.
const attackSecret = "hunter2SECRETvalue"

// attackJWT is a JWT whose signature is attackSecret.
const attackJWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9." + attackSecret

// pctAll percent-encodes every byte of s.
func pctAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteString("%")
		b.WriteString(strings.ToUpper(string("0123456789abcdef"[s[i]>>4]) + string("0123456789abcdef"[s[i]&15])))
	}
	return b.String()
}

// pctEscape percent-encodes every '%' of s (one more level of encoding).
func pctEscape(s string) string { return strings.ReplaceAll(s, "%", "%25") }

func TestAttackQueryEncodings(t *testing.T) {
	r := telemetry.DefaultRedactor()
	once := pctAll(attackJWT)
	cases := []string{
		"x=" + attackJWT,
		"x=" + once,
		"x=" + pctEscape(once),
		"x=" + pctEscape(pctEscape(once)),
		"x=%2565yJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9." + attackSecret,
		"x=Bearer%20" + attackSecret,
		"x=Bearer+" + attackSecret,
		"x=Bearer%2520" + attackSecret,
		"x=bEaReR%09" + attackSecret,
		"password=" + attackSecret,
		"PASSWORD=" + attackSecret,
		"Pass%77ord=" + attackSecret,
		"pass%2577ord=" + attackSecret,
		pctAll("token") + "=" + attackSecret,
		pctEscape(pctAll("token")) + "=" + attackSecret,
		"user%5Bpassword%5D=" + attackSecret,
		"a[api_key]=" + attackSecret,
		"token==" + attackSecret,
		"x=1&&&token=" + attackSecret + "&y=2",
		"x=1;token=" + attackSecret,
		"X-Amz-Security-Token=" + attackSecret,
		"X-Amz-Signature=" + attackSecret,
		"client_secret=" + attackSecret + "&client_secret=" + attackSecret,
		"jwt=" + attackSecret,
		attackJWT,
	}
	for _, q := range cases {
		if got := r.Query(q); strings.Contains(got, attackSecret) {
			t.Errorf("Query(%q): got %q, want the secret masked", q, got)
		}
	}
}

func TestAttackPathEncodings(t *testing.T) {
	r := telemetry.DefaultRedactor()
	once := pctAll(attackJWT)
	cases := []string{
		"/cb/" + attackJWT,
		"/cb/" + once,
		"/cb/" + pctEscape(once),
		"/cb/" + pctEscape(pctEscape(once)),
		"/cb/x" + attackJWT + ".png",
		"/app;jsessionid=" + attackSecret + "/home",
		"/app;JSESSIONID=" + attackSecret,
		"/app;v=1;token=" + attackSecret + ";w=2/x",
		"/reset/token=" + attackSecret,
		"/reset/password%3D" + attackSecret[:0] + "x/" + attackJWT,
		"/a/Bearer%20" + attackSecret,
	}
	for _, p := range cases {
		if got := r.Path(p); strings.Contains(got, attackSecret) {
			t.Errorf("Path(%q): got %q, want the secret masked", p, got)
		}
	}
	// What carries no secret is kept as sent.
	for _, p := range []string{"/", "/api/v1/items/42", "/a;v=1/b", "/search/q=shoes", "/%41%42"} {
		if got := r.Path(p); got != p {
			t.Errorf("Path(%q): got %q, want it unchanged", p, got)
		}
	}
	if got, want := r.Path("/app;v=1;session=abc/x"), "/app;v=1;session="+telemetry.Redacted+"/x"; got != want {
		t.Errorf("Path: got %q, want %q", got, want)
	}
}

func TestAttackHeaderNames(t *testing.T) {
	r := telemetry.DefaultRedactor()
	for _, h := range []string{
		"authorization", "AUTHORIZATION", "Authorization", "aUtHoRiZaTiOn", "Proxy-Authorization", "PROXY-AUTHORIZATION",
		"Cookie", "cookie", "Set-Cookie", "X-Amz-Security-Token", "x-amz-security-token", "X-Api-Key", "X-Auth-Token",
		"X-Csrf-Token", "Private-Token", "X-Goog-Iap-Jwt-Assertion", "X-Jwt", "X-Session", "Www-Authenticate",
		"Authorization-Extra", "X-" + strings.Repeat("a", 300) + "-Token",
	} {
		if got := r.Header(h, attackSecret); strings.Contains(got, attackSecret) {
			t.Errorf("Header(%q): got %q, want it masked", h, got)
		}
	}
	// A value that carries a credential is masked whatever the name.
	for _, v := range []string{
		"Bearer " + attackSecret, "bearer\t\t" + attackSecret, "BEARER   " + attackSecret, "Basic " + attackSecret,
		attackJWT, "v=" + attackJWT, "a, " + attackJWT + ", b",
	} {
		if got := r.Header("X-Other", v); strings.Contains(got, attackSecret) {
			t.Errorf("Header(X-Other, %q): got %q, want it masked", v, got)
		}
	}
}

func TestAttackFreeText(t *testing.T) {
	r := telemetry.DefaultRedactor()
	for _, s := range []string{
		"Mozilla/5.0 (Bearer " + attackSecret + ")",
		"curl/8 " + attackJWT,
		"req-" + attackJWT,
		"a\tbearer\t" + attackSecret,
		`upstream said "Authorization: Bearer ` + attackSecret + `"`,
		strings.Repeat("x", 10000) + " Bearer " + attackSecret,
		"Bearer " + attackSecret + " and Basic " + attackSecret + " and " + attackJWT,
	} {
		if got := r.Text(s); strings.Contains(got, attackSecret) {
			t.Errorf("Text(%.60q): got %.120q, want the secret masked", s, got)
		}
	}
}

// TestAttackHostileInputsDoNotPanic feeds each method inputs at the edges
// of its parsers.
func TestAttackHostileInputsDoNotPanic(t *testing.T) {
	r := telemetry.DefaultRedactor()
	inputs := []string{
		"", "%", "%%", "%2", "%zz", "=", "&", ";", "/", "//", "eyJ", "eyJ.", "eyJ..", "eyJa.b.", "Bearer", "Bearer ", "basic\t",
		strings.Repeat("%25", 5000), strings.Repeat("eyJ", 5000), strings.Repeat("a.", 5000), strings.Repeat("=;", 5000),
		strings.Repeat("%", 9000) + "eyJ", "\xff\xfe\x00", strings.Repeat("Bearer ", 1000),
	}
	for _, s := range inputs {
		_ = r.Query(s)
		_ = r.Path(s)
		_ = r.Text(s)
		_ = r.Header(s, s)
		_ = r.SensitiveQuery(s)
		_ = telemetry.HasCredential(s)
		_ = telemetry.LooksLikeJWT(s)
	}
}

// TestAttackNoAllocationWhenNothingMasked: the encodings added do not
// cost the data path an allocation for ordinary requests.
func TestAttackNoAllocationWhenNothingMasked(t *testing.T) {
	r := telemetry.DefaultRedactor()
	q, p := "page=2&sort=name%2Casc&q=%2541", "/api/v1/items;v=2/42"
	if n := testing.AllocsPerRun(100, func() { _ = r.Query(q); _ = r.Path(p) }); n != 0 {
		t.Errorf("Query and Path of plain values: got %v allocations, want 0", n)
	}
}

// TestAttackLongNamesAndPadding: a sensitive part past the first 128
// bytes of a name, or a credential past the first 4096 decoded bytes of a
// value, is still masked.
func TestAttackLongNamesAndPadding(t *testing.T) {
	r := telemetry.DefaultRedactor()
	long := strings.Repeat("a", 300)
	for _, q := range []string{
		long + "_token=" + attackSecret,
		long + "%5Fpassword=" + attackSecret,
		long + "%2574oken=" + attackSecret,
		"x=" + strings.Repeat("%41", 5000) + pctAll(attackJWT),
		"x=" + strings.Repeat("%2541", 5000) + pctEscape(pctAll(attackJWT)),
		"x=" + strings.Repeat("%41", 5000) + "Bearer%20" + attackSecret,
	} {
		if got := r.Query(q); strings.Contains(got, attackSecret) {
			t.Errorf("Query(%.60q...): got ...%q, want the secret masked", q, got[max(0, len(got)-80):])
		}
	}
	for _, p := range []string{
		"/a/" + strings.Repeat("%2541", 5000) + pctEscape(pctAll(attackJWT)),
		"/a;" + long + "_session=" + attackSecret,
	} {
		if got := r.Path(p); strings.Contains(got, attackSecret) {
			t.Errorf("Path(%.60q...): got ...%q, want the secret masked", p, got[max(0, len(got)-80):])
		}
	}
	if !r.SensitiveHeader("X-" + long + "-Token") {
		t.Errorf("SensitiveHeader of a long name ending in -Token: got false, want true")
	}
	if r.SensitiveHeader("X-" + long) {
		t.Errorf("SensitiveHeader of a long plain name: got true, want false")
	}
}

// TestAttackSplitJWT: a JWT split across two query parameters or two path
// segments leaves neither half in clear: each half is a JWT part (a
// base64url JSON object) on its own.
func TestAttackSplitJWT(t *testing.T) {
	r := telemetry.DefaultRedactor()
	head, rest := "eyJhbGciOiJIUzI1NiJ9", ".eyJzdWIiOiJhbGljZSJ9."+attackSecret
	for _, q := range []string{
		"a=" + head + "&b=" + rest,
		"a=" + head + "&b=" + pctAll(rest),
		"a=" + head + ".eyJzdWIiOiJhbGljZSJ9&b=." + attackSecret,
	} {
		got := r.Query(q)
		if strings.Contains(got, head) || strings.Contains(got, "eyJzdWIiOiJhbGljZSJ9") {
			t.Errorf("Query(%q): got %q, want both halves masked", q, got)
		}
	}
	if got := r.Path("/cb/" + head + "/" + rest); strings.Contains(got, head) || strings.Contains(got, attackSecret) {
		t.Errorf("Path: got %q, want both halves masked", got)
	}
	// Short values that merely start with eyJ are kept.
	for _, q := range []string{"name=eyJust", "q=eyJ"} {
		if got := r.Query(q); got != q {
			t.Errorf("Query(%q): got %q, want it unchanged", q, got)
		}
	}
}
