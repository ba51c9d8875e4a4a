// Package auth decides who a WebSocket client is: the subject of an HS256
// JWT when a secret is configured, or, in dev mode (no secret), the user id
// the client names itself.
package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrUnauthenticated is returned (wrapped) when a request names no valid user.
var ErrUnauthenticated = errors.New("auth: unauthenticated")

// Verifier authenticates requests. The zero value is dev mode. It is safe
// for concurrent use.
type Verifier struct {
	secret   []byte
	validate func(string) error
	parser   *jwt.Parser
}

// New returns a Verifier. With an empty secret it is in dev mode: the user
// is taken from ?user=. validate checks user ids (the subject or ?user=).
func New(secret string, validate func(string) error) *Verifier {
	return &Verifier{
		secret:   []byte(secret),
		validate: validate,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{"HS256"}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(5*time.Second),
		),
	}
}

// Dev reports whether the Verifier is in dev mode.
func (v *Verifier) Dev() bool { return len(v.secret) == 0 }

// User returns the authenticated user of r, from ?token= or an
// "Authorization: Bearer" header, or in dev mode from ?user=.
func (v *Verifier) User(r *http.Request) (string, error) {
	if v.Dev() {
		user := r.URL.Query().Get("user")
		if user == "" {
			return "", fmt.Errorf("%w: dev mode needs ?user=<id>", ErrUnauthenticated)
		}
		if err := v.validate(user); err != nil {
			return "", fmt.Errorf("%w: ?user=: %w", ErrUnauthenticated, err)
		}
		return user, nil
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			token = strings.TrimSpace(h[7:])
		}
	}
	if token == "" {
		return "", fmt.Errorf("%w: missing token", ErrUnauthenticated)
	}
	return v.Verify(token)
}

// Verify checks an HS256 token with a subject and an expiry and returns its
// subject.
func (v *Verifier) Verify(token string) (string, error) {
	var claims jwt.RegisteredClaims
	_, err := v.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return v.secret, nil })
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if claims.Subject == "" {
		return "", fmt.Errorf("%w: token has no sub", ErrUnauthenticated)
	}
	if err := v.validate(claims.Subject); err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return claims.Subject, nil
}

// Mint returns an HS256 token for user that expires after ttl.
func Mint(secret, user string, ttl time.Duration) (string, error) {
	if secret == "" {
		return "", errors.New("auth: no secret")
	}
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	})
	s, err := t.SignedString([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return s, nil
}
