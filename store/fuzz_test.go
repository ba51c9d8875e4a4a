package store

import (
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chatd/chatd/chat"
)

// FuzzElement: any list element, the seed's or garbage, decodes or is
// refused without a panic, and an element chatd encodes decodes to what
// was encoded.
func FuzzElement(f *testing.F) {
	f.Add(`{"fromid":23,"toid":43,"msg":"hi","time":1732567890.123}`, "23", "43", "hi")
	f.Add(`{"fromid":"a","toid":"b","msg":"\u00e9","time":"1.5"}`, "a", "b", "<&>\"\\\n\x01")
	f.Add(`{"fromid":2.5,"toid":1e3,"msg":null,"time":NaN}`, "9", "10", "\u2028")
	f.Fuzz(func(t *testing.T, raw, from, to, text string) {
		_, _ = decodeElement("43-23", 1, raw)
		if chat.ValidateUser(from) != nil || chat.ValidateUser(to) != nil || chat.ValidateText(text) != nil {
			return
		}
		_, ts := formatTime(time.Unix(1732567890, 123000000))
		el := encodeElement(from, to, text, ts)
		if !json.Valid(el) || !utf8.Valid(el) {
			t.Fatalf("element %q is not valid JSON", el)
		}
		m, err := decodeElement("c", 7, string(el))
		if err != nil {
			t.Fatalf("decode %q: %v", el, err)
		}
		if m.From != from || m.To != to || m.Text != text || m.Seq != 7 {
			t.Fatalf("round trip of %q %q %q gave %+v", from, to, text, m)
		}
	})
}
