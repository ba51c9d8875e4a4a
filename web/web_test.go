package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, srv *httptest.Server, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp, string(body)
}

func TestHandler(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)

	tests := []struct {
		path      string
		status    int
		ctype     string // prefix of Content-Type; empty: not checked
		body      string // substring of the body; empty: not checked
		cacheable bool
	}{
		{path: "/", status: http.StatusOK, ctype: "text/html", body: `<script type="module" src="app.js">`, cacheable: true},
		{path: "/app.js", status: http.StatusOK, ctype: "text/javascript", body: "import", cacheable: true},
		{path: "/app.css", status: http.StatusOK, ctype: "text/css", cacheable: true},
		{path: "/chat.js", status: http.StatusOK, ctype: "text/javascript", cacheable: true},
		{path: "/icon.svg", status: http.StatusOK, ctype: "image/svg+xml", cacheable: true},
		{path: "/nope.js", status: http.StatusNotFound},
		{path: "/index.html", status: http.StatusNotFound},
		{path: "/static/app.js", status: http.StatusNotFound},
		{path: "/ws/extra", status: http.StatusNotFound},
	}
	for _, tt := range tests {
		resp, body := get(t, srv, tt.path, nil)
		if resp.StatusCode != tt.status {
			t.Errorf("GET %s: status %d, want %d", tt.path, resp.StatusCode, tt.status)
			continue
		}
		if got := resp.Header.Get("Content-Type"); tt.ctype != "" && !strings.HasPrefix(got, tt.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s…", tt.path, got, tt.ctype)
		}
		if tt.body != "" && !strings.Contains(body, tt.body) {
			t.Errorf("GET %s: body does not contain %q", tt.path, tt.body)
		}
		if tt.cacheable {
			if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("GET %s: Cache-Control %q, want no-cache", tt.path, got)
			}
			if resp.Header.Get("ETag") == "" {
				t.Errorf("GET %s: no ETag", tt.path)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("GET %s: X-Content-Type-Options %q, want nosniff", tt.path, got)
			}
		}
	}
}

func TestHandlerRevalidates(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)

	first, _ := get(t, srv, "/app.js", nil)
	etag := first.Header.Get("ETag")
	if etag == "" {
		t.Fatal("GET /app.js: no ETag")
	}
	again, body := get(t, srv, "/app.js", http.Header{"If-None-Match": {etag}})
	if again.StatusCode != http.StatusNotModified {
		t.Errorf("GET /app.js with If-None-Match: status %d, want 304", again.StatusCode)
	}
	if body != "" {
		t.Errorf("GET /app.js with If-None-Match: body of %d bytes, want none", len(body))
	}
}

func TestHandlerMethods(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)

	resp, err := srv.Client().Post(srv.URL+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", resp.StatusCode)
	}

	req, err := http.NewRequest(http.MethodHead, srv.URL+"/app.css", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /app.css: status %d, want 200", resp.StatusCode)
	}
}
