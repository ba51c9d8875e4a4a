package hub

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Origins is a parsed list of browser origin patterns (-origins). The zero
// value allows no origin besides the server's own host. It is safe for
// concurrent use.
//
// A pattern is a host name or IP address, optionally with a port:
// "chat.example.com", "chat.example.com:8443", "127.0.0.1:8080",
// "[::1]:8080". A pattern without a port matches only origins without one
// (the scheme's default port, as browsers write it); with a port, only that
// port. A leading "*." matches one or more whole labels: "*.example.com"
// matches "a.example.com" and "a.b.example.com", but not "example.com" and
// not "evilexample.com". A "*" anywhere else is refused, and so is a
// wildcard over fewer than two labels ("*.com"). Matching ignores case.
type Origins struct {
	patterns []originPattern
}

type originPattern struct {
	host string // lower case, without brackets; without the "*." of a wildcard
	port string // "" matches only an origin without a port
	wild bool   // host is a suffix of whole labels
}

// ErrBadOrigin is returned (wrapped) by ParseOrigins for a pattern it refuses.
var ErrBadOrigin = errors.New("hub: bad origin pattern")

// ParseOrigins parses origin patterns (see Origins). Empty patterns are
// skipped. An invalid one is an error that names it and says why.
func ParseOrigins(patterns []string) (Origins, error) {
	var o Origins
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		op, err := parseOriginPattern(p)
		if err != nil {
			return Origins{}, fmt.Errorf("%w %q: %s", ErrBadOrigin, p, err)
		}
		o.patterns = append(o.patterns, op)
	}
	return o, nil
}

func parseOriginPattern(p string) (originPattern, error) {
	if strings.Contains(p, "://") {
		return originPattern{}, errors.New("want a host such as chat.example.com, not a URL: drop the scheme")
	}
	if strings.ContainsAny(p, "/?#@") {
		return originPattern{}, errors.New("want a host with an optional port, nothing else")
	}
	host, port, err := splitHostPort(p)
	if err != nil {
		return originPattern{}, err
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return originPattern{}, fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
	}
	host = strings.ToLower(host)
	op := originPattern{host: host, port: port}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		op.host, op.wild = rest, true
		if strings.Count(rest, ".") < 1 {
			return originPattern{}, errors.New(`a wildcard must cover at least two labels, as in "*.example.com"`)
		}
	}
	if strings.Contains(op.host, "*") {
		return originPattern{}, errors.New(`"*" matches whole labels only: write "*.example.com", with "*." at the start`)
	}
	if net.ParseIP(op.host) != nil {
		if op.wild {
			return originPattern{}, errors.New("a wildcard cannot precede an IP address")
		}
		return op, nil
	}
	for _, label := range strings.Split(op.host, ".") {
		if !validLabel(label) {
			return originPattern{}, fmt.Errorf("%q is not a host name label (letters, digits, '-', '_')", label)
		}
	}
	return op, nil
}

// splitHostPort splits "host", "host:port", "[v6]" and "[v6]:port".
func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", errors.New("missing ']' after an IPv6 address")
		}
		host, rest := s[1:end], s[end+1:]
		if net.ParseIP(host) == nil || !strings.Contains(host, ":") {
			return "", "", fmt.Errorf("%q is not an IPv6 address", host)
		}
		if rest == "" {
			return host, "", nil
		}
		if rest[0] != ':' || len(rest) == 1 {
			return "", "", fmt.Errorf("%q after the IPv6 address: want :port", rest)
		}
		return host, rest[1:], nil
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, "", nil
	case 1:
		host, port, _ = strings.Cut(s, ":")
		if host == "" || port == "" {
			return "", "", errors.New("want host or host:port")
		}
		return host, port, nil
	}
	return "", "", errors.New("an IPv6 address needs brackets: [::1]:8080")
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// match reports whether a host (lower case, no brackets) and port match p.
func (p originPattern) match(host, port string) bool {
	if port != p.port {
		return false
	}
	if !p.wild {
		return host == p.host
	}
	return strings.HasSuffix(host, "."+p.host) && len(host) > len(p.host)+1
}

// Allowed reports whether a browser page from origin (the Origin header's
// value, such as "https://chat.example.com") may open a socket on a server
// reached as host (the request's Host). The same host is always allowed;
// otherwise a pattern must match. An empty origin (a client that is not a
// browser) is allowed; "null" and anything that is not a URL with a host
// are not.
func (o Origins) Allowed(origin, host string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Scheme == "" || u.User != nil {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	h, port, err := splitHostPort(u.Host)
	if err != nil {
		return false
	}
	h = strings.ToLower(h)
	for _, p := range o.patterns {
		if p.match(h, port) {
			return true
		}
	}
	return false
}

// MatchHost reports whether a request's Host names one of the patterns'
// hosts, on any port. cmd/chatd uses it to serve, in dev mode, the hosts
// the operator named.
func (o Origins) MatchHost(hostport string) bool {
	h := hostport
	if sh, _, err := splitHostPort(hostport); err == nil {
		h = sh
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	for _, p := range o.patterns {
		if p.match(h, p.port) {
			return true
		}
	}
	return false
}

// checkOrigin answers 403 and returns false when r comes from a browser
// page whose origin is not allowed.
func (h *Hub) checkOrigin(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if h.origins.Allowed(origin, r.Host) {
		return true
	}
	h.log.Debug("foreign origin refused", "origin", origin, "host", r.Host)
	http.Error(w, "origin not allowed: this page's origin may not open a socket here (see -origins)", http.StatusForbidden)
	return false
}
