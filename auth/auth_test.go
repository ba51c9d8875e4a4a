package auth_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatd/chatd/auth"
)

func validate(id string) error {
	if id == "" || strings.ContainsAny(id, ": ") {
		return errors.New("invalid user id")
	}
	return nil
}

func TestVerify(t *testing.T) {
	t.Parallel()
	const secret = "k"
	v := auth.New(secret, validate)
	good, err := auth.Mint(secret, "23", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	cases := []struct {
		name, token, want string
	}{
		{"minted", good, "23"},
		{"expired", sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23", "exp": time.Now().Add(-time.Minute).Unix()}), ""},
		{"within leeway", sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23", "exp": time.Now().Add(-2 * time.Second).Unix()}), "23"},
		{"no exp", sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "23"}), ""},
		{"no sub", sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"exp": exp}), ""},
		{"invalid sub", sign(jwt.SigningMethodHS256, []byte(secret), jwt.MapClaims{"sub": "a:b", "exp": exp}), ""},
		{"other key", sign(jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "23", "exp": exp}), ""},
		{"HS384", sign(jwt.SigningMethodHS384, []byte(secret), jwt.MapClaims{"sub": "23", "exp": exp}), ""},
		{"none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "23", "exp": exp}), ""},
		{"garbage", "x.y.z", ""},
	}
	for _, tc := range cases {
		got, err := v.Verify(tc.token)
		if tc.want == "" {
			if err == nil || !errors.Is(err, auth.ErrUnauthenticated) {
				t.Errorf("%s: Verify = %q, %v; want ErrUnauthenticated", tc.name, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: Verify = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestUserFromRequest(t *testing.T) {
	t.Parallel()
	tok, err := auth.Mint("k", "43", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	jwtMode, dev := auth.New("k", validate), auth.New("", validate)
	if jwtMode.Dev() || !dev.Dev() {
		t.Fatal("Dev() wrong")
	}
	cases := []struct {
		v      *auth.Verifier
		url    string
		header string
		want   string
	}{
		{jwtMode, "/ws?token=" + tok, "", "43"},
		{jwtMode, "/ws", "Bearer " + tok, "43"},
		{jwtMode, "/ws", "bearer " + tok, "43"},
		{jwtMode, "/ws?user=43", "", ""},
		{jwtMode, "/ws", "Basic abc", ""},
		{dev, "/ws?user=23", "", "23"},
		{dev, "/ws?user=a:b", "", ""},
		{dev, "/ws", "", ""},
		{dev, "/ws?token=" + tok, "", ""},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", tc.url, nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		got, err := tc.v.User(r)
		if (tc.want == "") != (err != nil) || got != tc.want {
			t.Errorf("%s %q (dev %v): User = %q, %v; want %q", tc.url, tc.header, tc.v.Dev(), got, err, tc.want)
		}
	}
	if _, err := auth.Mint("", "23", time.Hour); err == nil {
		t.Error("Mint without a secret succeeded")
	}
}
