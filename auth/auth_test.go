package auth_test

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatd/chatd/auth"
)

// secret is as long as CheckSecret asks.
const secret = "0123456789abcdef0123456789abcdef"

func validate(id string) error {
	if id == "" || strings.ContainsAny(id, ": ") {
		return errors.New("store: invalid user id")
	}
	return nil
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every refusal says missing, expired or invalid in words a client can act
// on, with none of the JWT library's own text; the log gets that.
func TestVerify(t *testing.T) {
	t.Parallel()
	v := auth.New(secret, validate)
	good, err := auth.Mint(secret, "23", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	cases := []struct {
		name, token, want, text string
	}{
		{"minted", good, "23", ""},
		{"expired", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23", "exp": time.Now().Add(-time.Minute).Unix()}), "", "token expired: get a new one"},
		{"within leeway", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23", "exp": time.Now().Add(-2 * time.Second).Unix()}), "23", ""},
		{"no exp", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23"}), "", "invalid token: it has no exp"},
		{"not yet", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23", "exp": exp, "nbf": exp - 60}), "", "invalid token: not valid yet"},
		{"no sub", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": exp}), "", "invalid token: it has no sub"},
		{"invalid sub", sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "a:b", "exp": exp}), "", "invalid token: sub: invalid user id"},
		{"other key", sign(t, jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "23", "exp": exp}), "", "invalid token"},
		{"other key, expired", sign(t, jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "23", "exp": exp - 7200}), "", "invalid token"},
		{"HS384", sign(t, jwt.SigningMethodHS384, []byte(secret), jwt.MapClaims{"sub": "23", "exp": exp}), "", "invalid token"},
		{"none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "23", "exp": exp}), "", "invalid token"},
		{"garbage", "x.y.z", "", "invalid token"},
	}
	for _, tc := range cases {
		got, expires, err := v.Verify(tc.token)
		if tc.want == "" {
			var ae *auth.Error
			if !errors.Is(err, auth.ErrUnauthenticated) || !errors.As(err, &ae) || ae.HTTPStatus() != http.StatusUnauthorized {
				t.Errorf("%s: Verify = %q, %v; want an *auth.Error with status 401", tc.name, got, err)
				continue
			}
			if err.Error() != tc.text {
				t.Errorf("%s: client text %q, want %q", tc.name, err.Error(), tc.text)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: Verify = %q, %v; want %q", tc.name, got, err, tc.want)
		}
		if expires.IsZero() {
			t.Errorf("%s: no expiry", tc.name)
		}
	}

	// The expiry is exp plus the leeway: the moment the token is refused.
	tok := sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23", "exp": exp})
	if _, expires, err := v.Verify(tok); err != nil || !expires.Equal(time.Unix(exp, 0).Add(auth.Leeway)) {
		t.Errorf("expires = %v, %v; want exp + %v", expires, err, auth.Leeway)
	}

	// The library's words go to the log, not to the client.
	_, _, err = v.Verify(cases[7].token)
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("refused", "err", err)
	if !strings.Contains(buf.String(), "cause=") || !strings.Contains(buf.String(), "signature") {
		t.Errorf("log line lacks the cause: %s", buf.String())
	}
}

func TestUserFromRequest(t *testing.T) {
	t.Parallel()
	tok, err := auth.Mint(secret, "43", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := auth.Mint(secret, "43", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := auth.Mint(secret, "65", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired := sign(t, jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "43", "exp": time.Now().Add(-time.Hour).Unix()})
	jwtMode, dev := auth.New(secret, validate), auth.New("", validate)
	if jwtMode.Dev() || !dev.Dev() {
		t.Fatal("Dev() wrong")
	}
	cases := []struct {
		v      *auth.Verifier
		url    string
		header string
		want   string
		status int    // of the refusal
		text   string // the refusal's text contains it
	}{
		{jwtMode, "/ws?token=" + tok, "", "43", 0, ""},
		{jwtMode, "/ws", "Bearer " + tok, "43", 0, ""},
		{jwtMode, "/ws", "bearer " + tok, "43", 0, ""},
		{jwtMode, "/ws?token=" + tok, "Bearer " + tok, "43", 0, ""},
		{jwtMode, "/ws?token=" + tok, "Bearer " + tok2, "43", 0, ""},
		{jwtMode, "/ws?token=" + tok, "Basic abc", "43", 0, ""},
		{jwtMode, "/ws?token=" + tok, "Bearer " + other, "", 400, "different users"},
		{jwtMode, "/ws?token=" + other, "Bearer " + tok, "", 400, "different users"},
		{jwtMode, "/ws?token=" + tok, "Bearer " + expired, "", 401, "token expired"},
		{jwtMode, "/ws?token=" + expired, "Bearer " + tok, "", 401, "token expired"},
		{jwtMode, "/ws?token=" + tok, "Bearer x.y.z", "", 401, "invalid token"},
		{jwtMode, "/ws?user=43", "", "", 401, "missing token"},
		{jwtMode, "/ws", "Basic abc", "", 401, "missing token"},
		{dev, "/ws?user=23", "", "23", 0, ""},
		{dev, "/ws?user=a:b", "", "", 401, "?user=: invalid user id"},
		{dev, "/ws", "", "", 401, "dev mode needs ?user="},
		{dev, "/ws?token=" + tok, "", "", 401, "dev mode needs ?user="},
		// A credential given twice the same way: which one a proxy in front
		// checked is unknown.
		{jwtMode, "/ws?token=" + tok + "&token=" + other, "", "", 400, "?token= given more than once"},
		{jwtMode, "/ws?token=" + tok + "&token=" + tok, "", "", 400, "?token= given more than once"},
		{dev, "/ws?user=23&user=43", "", "", 400, "?user= given more than once"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", tc.url, nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		got, expires, err := tc.v.User(r)
		if tc.want != "" {
			if err != nil || got != tc.want {
				t.Errorf("%s %q (dev %v): User = %q, %v; want %q", tc.url, tc.header, tc.v.Dev(), got, err, tc.want)
			}
			if expires.IsZero() != tc.v.Dev() {
				t.Errorf("%s %q (dev %v): expires = %v", tc.url, tc.header, tc.v.Dev(), expires)
			}
			if tc.header == "Bearer "+tok2 && time.Until(expires) > time.Hour+auth.Leeway+time.Minute {
				t.Errorf("two tokens: expires %v, want the earlier one", expires)
			}
			continue
		}
		var ae *auth.Error
		if !errors.As(err, &ae) || ae.HTTPStatus() != tc.status || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s %q (dev %v): User = %q, %v; want status %d mentioning %q", tc.url, tc.header, tc.v.Dev(), got, err, tc.status, tc.text)
		}
		if strings.Contains(err.Error(), "store:") {
			t.Errorf("%s: client text %q carries a package tag", tc.url, err)
		}
	}
	r := httptest.NewRequest("GET", "/ws", nil)
	r.Header.Add("Authorization", "Bearer "+tok)
	r.Header.Add("Authorization", "Bearer "+other)
	var ae *auth.Error
	if _, _, err := jwtMode.User(r); !errors.As(err, &ae) || ae.HTTPStatus() != 400 ||
		!strings.Contains(err.Error(), "Authorization header given more than once") {
		t.Errorf("two Authorization headers: %v; want 400", err)
	}
}

func TestSecretLength(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "k", "s3cret-for-tests", secret[:31]} {
		err := auth.CheckSecret(s)
		if err == nil || !strings.Contains(err.Error(), "at least 32") {
			t.Errorf("CheckSecret(%d bytes) = %v, want a refusal naming 32", len(s), err)
		} else if len(s) > 3 && strings.Contains(err.Error(), s) {
			t.Errorf("CheckSecret's error holds the secret: %v", err)
		}
		if _, err := auth.Mint(s, "23", time.Hour); err == nil {
			t.Errorf("Mint with a %d-byte secret succeeded", len(s))
		}
	}
	if err := auth.CheckSecret(secret); err != nil {
		t.Errorf("CheckSecret(32 bytes) = %v", err)
	}
}
