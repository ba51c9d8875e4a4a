package main

import (
	"net"
	"net/http"
	"strings"

	"github.com/chatd/chatd/hub"
)

// devHosts serves only requests whose Host is a loopback name or address
// (localhost, 127.0.0.1, [::1], any port) or one of the hosts of -origins,
// on every route; any other Host gets 421 Misdirected Request.
//
// Dev mode lets anyone who reaches the server act as any user, and a
// loopback listener alone does not keep web pages out: through DNS
// rebinding, a page on evil.com has its own name resolve to 127.0.0.1 and
// then calls the server with "Host: evil.com:PORT" and a matching Origin,
// which the same-host origin rule lets in. Checking the Host closes that.
func devHosts(next http.Handler, origins hub.Origins) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopbackHost(r.Host) || origins.MatchHost(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		http.Error(w, "misdirected request: chatd in dev mode answers only for localhost, 127.0.0.1, [::1] "+
			"and the -origins hosts (start it with -secret, or with -dev-public)", http.StatusMisdirectedRequest)
	})
}

// loopbackHost reports whether a Host header names this machine's loopback
// interface: "localhost" or a loopback address, with or without a port.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
