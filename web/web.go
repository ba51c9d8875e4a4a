// Package web holds the browser client of chatd: plain HTML, CSS and
// JavaScript modules embedded in the binary, served by Handler.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"time"
)

//go:embed static
var static embed.FS

// asset is one embedded file, read once when the handler is built.
type asset struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

// Handler returns an http.Handler that serves the browser client: index.html
// at "/" and the modules, styles and icons beside it ("/app.js", "/app.css", …).
// Any other path answers 404, and methods other than GET and HEAD answer 405.
//
// Responses carry "Cache-Control: no-cache" with a strong ETag, so a browser
// revalidates on every load and gets 304 Not Modified until the binary
// changes, plus a Content-Security-Policy that only allows the page's own
// origin. The handler is safe for concurrent use.
func Handler() http.Handler {
	files := make(map[string]asset)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		name := p[len("static"):]
		sum := sha256.Sum256(body)
		ctype := contentType(name)
		if ctype == "" {
			ctype = http.DetectContentType(body)
		}
		files[name] = asset{
			name:  name,
			body:  body,
			ctype: ctype,
			etag:  `"` + hex.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		// The files are compiled into the binary: failing to read them is a build defect.
		panic("web: reading embedded files: " + err.Error())
	}
	files["/"] = files["/index.html"]
	delete(files, "/index.html")

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := files[r.URL.Path]
		if !ok || a.body == nil {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
		http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
	})
}

// contentType fixes the types of the client's own kinds of file, so that they
// do not depend on the host's MIME tables (which may call JavaScript
// "application/x-javascript"); other extensions are left to package mime.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return mime.TypeByExtension(path.Ext(name))
}
