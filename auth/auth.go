// Package auth decides who a WebSocket client is: the subject of an HS256
// JWT when a secret is configured, or, in dev mode (no secret), the user id
// the client names itself.
package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrUnauthenticated is wrapped by every error of User and Verify.
var ErrUnauthenticated = errors.New("auth: unauthenticated")

// MinSecretLen is the shortest secret accepted, in bytes: HS256 wants a key
// of at least 256 bits.
const MinSecretLen = 32

// Leeway is how long after its exp a token is still accepted, for clock skew.
const Leeway = 5 * time.Second

// CheckSecret reports whether secret is long enough to sign tokens. Its
// error never contains the secret.
func CheckSecret(secret string) error {
	if len(secret) < MinSecretLen {
		return fmt.Errorf("auth: the secret is %d bytes, and HS256 wants at least %d (256 bits): "+
			"make one with `openssl rand -hex 32`", len(secret), MinSecretLen)
	}
	return nil
}

// Error is why a request names no user. Its text is meant for the client:
// it says what the client can act on (a missing, expired or invalid
// credential) and never holds a library's internals; Cause holds those,
// for the server's log. errors.Is(err, ErrUnauthenticated) holds for
// every *Error.
type Error struct {
	// Status is the HTTP status to answer: 401, or 400 for a request that
	// names two different users or gives a credential twice.
	Status int
	// Text is the message for the client.
	Text string
	// Cause is the underlying error, for the log only; it may be nil.
	Cause error
}

// Error returns the text for the client.
func (e *Error) Error() string { return e.Text }

// HTTPStatus returns the status to answer with.
func (e *Error) HTTPStatus() int { return e.Status }

// Unwrap returns ErrUnauthenticated and the cause, if any.
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{ErrUnauthenticated}
	}
	return []error{ErrUnauthenticated, e.Cause}
}

// LogValue shows the cause too, for the server's log.
func (e *Error) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Int("status", e.Status), slog.String("text", e.Text)}
	if e.Cause != nil {
		attrs = append(attrs, slog.String("cause", e.Cause.Error()))
	}
	return slog.GroupValue(attrs...)
}

func unauthorized(text string, cause error) *Error {
	return &Error{Status: http.StatusUnauthorized, Text: text, Cause: cause}
}

// Verifier authenticates requests. The zero value is dev mode. It is safe
// for concurrent use.
type Verifier struct {
	secret   []byte
	validate func(string) error
	parser   *jwt.Parser
}

// New returns a Verifier. With an empty secret it is in dev mode: the user
// is taken from ?user=. validate checks user ids (the subject or ?user=);
// the text of its errors is shown to clients. New does not check the
// secret's length: callers do, with CheckSecret.
func New(secret string, validate func(string) error) *Verifier {
	return &Verifier{
		secret:   []byte(secret),
		validate: validate,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{"HS256"}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(Leeway),
		),
	}
}

// twice is the error for a credential given more than once the same way.
func twice(what string) *Error {
	return &Error{Status: http.StatusBadRequest, Text: what + " given more than once: send one"}
}

// Dev reports whether the Verifier is in dev mode.
func (v *Verifier) Dev() bool { return len(v.secret) == 0 }

// User returns the authenticated user of r and when its credential stops
// being accepted (the token's exp plus Leeway; zero in dev mode). The
// token comes from ?token= or an "Authorization: Bearer" header; when both
// are present, both must be valid and name the same user (otherwise the
// error's status is 400), and the earlier expiry counts. In dev mode the
// user comes from ?user=. A credential given twice the same way (two
// ?token=, two headers, two ?user=) is refused with 400: a proxy in front
// may read the other one. Errors are *Error.
func (v *Verifier) User(r *http.Request) (string, time.Time, error) {
	q := r.URL.Query()
	if v.Dev() {
		if len(q["user"]) > 1 {
			return "", time.Time{}, twice("?user=")
		}
		user := q.Get("user")
		if user == "" {
			return "", time.Time{}, unauthorized("dev mode needs ?user=<id>", nil)
		}
		if err := v.validate(user); err != nil {
			return "", time.Time{}, unauthorized("?user=: "+untagged(err), err)
		}
		return user, time.Time{}, nil
	}
	if len(q["token"]) > 1 {
		return "", time.Time{}, twice("?token=")
	}
	if len(r.Header.Values("Authorization")) > 1 {
		return "", time.Time{}, twice("the Authorization header")
	}
	query := q.Get("token")
	header := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		header = strings.TrimSpace(h[7:])
	}
	switch {
	case query == "" && header == "":
		return "", time.Time{}, unauthorized("missing token: pass ?token= or an Authorization: Bearer header", nil)
	case query == "":
		return v.Verify(header)
	case header == "" || header == query:
		return v.Verify(query)
	}
	qUser, qExp, err := v.Verify(query)
	if err != nil {
		return "", time.Time{}, err
	}
	hUser, hExp, err := v.Verify(header)
	if err != nil {
		return "", time.Time{}, err
	}
	if qUser != hUser {
		return "", time.Time{}, &Error{Status: http.StatusBadRequest,
			Text: "?token= and the Authorization header name different users: send one token"}
	}
	if hExp.Before(qExp) {
		qExp = hExp
	}
	return qUser, qExp, nil
}

// Verify checks an HS256 token with a subject and an expiry and returns its
// subject and when it stops being accepted (its exp plus Leeway). Errors
// are *Error.
func (v *Verifier) Verify(token string) (string, time.Time, error) {
	var claims jwt.RegisteredClaims
	_, err := v.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return v.secret, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", time.Time{}, unauthorized("token expired: get a new one", err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "", time.Time{}, unauthorized("invalid token: it has no exp", err)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "", time.Time{}, unauthorized("invalid token: not valid yet", err)
	case err != nil:
		return "", time.Time{}, unauthorized("invalid token", err)
	}
	if claims.Subject == "" {
		return "", time.Time{}, unauthorized("invalid token: it has no sub", nil)
	}
	if err := v.validate(claims.Subject); err != nil {
		return "", time.Time{}, unauthorized("invalid token: sub: "+untagged(err), err)
	}
	return claims.Subject, claims.ExpiresAt.Add(Leeway), nil
}

// untagged drops a leading package tag ("store: ") from an error's text.
func untagged(err error) string {
	s := err.Error()
	if tag, rest, ok := strings.Cut(s, ": "); ok && tag != "" && strings.Trim(tag, "abcdefghijklmnopqrstuvwxyz") == "" {
		return rest
	}
	return s
}

// Mint returns an HS256 token for user that expires after ttl. The secret
// must pass CheckSecret.
func Mint(secret, user string, ttl time.Duration) (string, error) {
	if secret == "" {
		return "", errors.New("auth: no secret")
	}
	if err := CheckSecret(secret); err != nil {
		return "", err
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
