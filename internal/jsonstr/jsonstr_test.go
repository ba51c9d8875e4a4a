package jsonstr

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func FuzzAppendRoundTrips(f *testing.F) {
	for _, s := range []string{"", "hi", "a\"b\\c", "\n\r\t\x00\x1f\x7f", "<>&", "你好🎉", "\u2028\u2029"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		got := Append(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Fatalf("%q -> %s -> %q, %v", s, got, back, err)
		}
	})
}
