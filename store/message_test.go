package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
)

func TestFormatTime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		t    time.Time
		want float64
		text string
	}{
		{"milliseconds", time.Unix(1732567890, 123_000_000), 1732567890.123, "1732567890.123"},
		{"microseconds", time.UnixMicro(1732567890_123456), 1732567890.123456, "1732567890.123456"},
		{"nanoseconds are cut", time.Unix(1732567890, 123_456_789), 1732567890.123456, "1732567890.123456"},
		{"one microsecond", time.UnixMicro(1732567890_000001), 1732567890.000001, "1732567890.000001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, b := formatTime(tt.t)
			if f != tt.want || string(b) != tt.text {
				t.Fatalf("formatTime(%v) = %v, %q; want %v, %q", tt.t, f, b, tt.want, tt.text)
			}
		})
	}
}

// TestFormatTimeWholeSecondIsFloat: the seed writes time.time(), a Python
// float, which json.dumps always renders with a fraction ("1732567890.0"),
// so the seed's msgread gets a float back. A message stored on a whole
// second must not read back as a Python int.
func TestFormatTimeWholeSecondIsFloat(t *testing.T) {
	t.Parallel()
	for _, tm := range []time.Time{time.Unix(1732567890, 0), time.Unix(1732567890, 999)} {
		f, b := formatTime(tm)
		if f != 1732567890 {
			t.Errorf("formatTime(%v) = %v, want 1732567890", tm, f)
		}
		if !bytes.ContainsAny(b, ".eE") {
			t.Errorf("formatTime(%v) renders %q: a JSON integer, which the seed's Python reads as int, not float; want 1732567890.0", tm, b)
		}
	}
}

func TestEncodeElement(t *testing.T) {
	t.Parallel()
	const ts = "1732567890.123"
	tests := []struct {
		name, from, to, text string
		want                 string
	}{
		{"decimal ids are numbers", "23", "43", "hi",
			`{"fromid":23,"toid":43,"msg":"hi","time":1732567890.123}`},
		{"zero is a number", "0", "1", "x",
			`{"fromid":0,"toid":1,"msg":"x","time":1732567890.123}`},
		{"string ids", "alice", "bob", "x",
			`{"fromid":"alice","toid":"bob","msg":"x","time":1732567890.123}`},
		{"mixed ids", "23", "bob@x.org", "x",
			`{"fromid":23,"toid":"bob@x.org","msg":"x","time":1732567890.123}`},
		{"leading zero is a string", "007", "7", "x",
			`{"fromid":"007","toid":7,"msg":"x","time":1732567890.123}`},
		{"longer than int64 is still a number", "123456789012345678901234567890", "9", "x",
			`{"fromid":123456789012345678901234567890,"toid":9,"msg":"x","time":1732567890.123}`},
		{"escapes", "1", "2", "say \"hi\" \\ there\n\tok\x01",
			`{"fromid":1,"toid":2,"msg":"say \"hi\" \\ there\n\tok\u0001","time":1732567890.123}`},
		{"no html escaping", "1", "2", "<b>&</b>",
			`{"fromid":1,"toid":2,"msg":"<b>&</b>","time":1732567890.123}`},
		{"utf-8 kept as is", "1", "2", "你好，世界 🎉👍",
			`{"fromid":1,"toid":2,"msg":"你好，世界 🎉👍","time":1732567890.123}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := encodeElement(tt.from, tt.to, tt.text, []byte(ts))
			if string(got) != tt.want {
				t.Fatalf("encodeElement = %s\nwant             %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Fatalf("encodeElement = %s: not valid JSON", got)
			}
			m, err := decodeElement("c", 7, string(got))
			if err != nil {
				t.Fatalf("decodeElement(encodeElement) = %v", err)
			}
			want := chat.Message{Conv: "c", Seq: 7, From: tt.from, To: tt.to, Text: tt.text, Time: 1732567890.123}
			if m != want {
				t.Fatalf("round trip = %+v, want %+v", m, want)
			}
		})
	}
}

func TestDecodeElement(t *testing.T) {
	t.Parallel()
	msg := func(from, to, text string, ts float64) *chat.Message {
		return &chat.Message{Conv: "43-23", Seq: 5, From: from, To: to, Text: text, Time: ts}
	}
	tests := []struct {
		name string
		data string
		want *chat.Message // nil: malformed
	}{
		{"chatd's own", `{"fromid":23,"toid":43,"msg":"hi","time":1732567890.123456}`,
			msg("23", "43", "hi", 1732567890.123456)},
		{"python json.dumps default", `{"fromid": 23, "toid": 43, "msg": "\u4f60\u597d\uff0c\u4e16\u754c", "time": 1732567890.1234567}`,
			msg("23", "43", "你好，世界", 1732567890.1234567)},
		{"escaped emoji surrogates", `{"fromid": 23, "toid": 43, "msg": "\ud83c\udf89\ud83d\udc4d", "time": 1.5}`,
			msg("23", "43", "🎉👍", 1.5)},
		{"raw utf-8", `{"fromid":23,"toid":43,"msg":"你好 🎉","time":1.5}`,
			msg("23", "43", "你好 🎉", 1.5)},
		{"string ids", `{"fromid":"alice","toid":"bob","msg":"x","time":1.5}`,
			msg("alice", "bob", "x", 1.5)},
		{"numeric string ids", `{"fromid":"23","toid":"43","msg":"x","time":1.5}`,
			msg("23", "43", "x", 1.5)},
		{"huge numeric id", `{"fromid":123456789012345678901234567890,"toid":1,"msg":"x","time":1.5}`,
			msg("123456789012345678901234567890", "1", "x", 1.5)},
		{"integer time", `{"fromid":23,"toid":43,"msg":"x","time":1732567890}`,
			msg("23", "43", "x", 1732567890)},
		{"string time", `{"fromid":23,"toid":43,"msg":"x","time":"1732567890.5"}`,
			msg("23", "43", "x", 1732567890.5)},
		{"exponent time", `{"fromid":23,"toid":43,"msg":"x","time":1.7325678905e9}`,
			msg("23", "43", "x", 1732567890.5)},
		{"extra fields", `{"seq":99,"fromid":23,"toid":43,"msg":"x","time":1.5,"extra":[1,{"a":2}]}`,
			msg("23", "43", "x", 1.5)},
		{"empty text", `{"fromid":23,"toid":43,"msg":"","time":1.5}`,
			msg("23", "43", "", 1.5)},
		{"escapes", `{"fromid":23,"toid":43,"msg":"a\"b\\c\nd\/e","time":1.5}`,
			msg("23", "43", "a\"b\\c\nd/e", 1.5)},

		{"not json", `not json`, nil},
		{"empty", ``, nil},
		{"truncated", `{"fromid":23,"toid":43,"msg":"x","time":1.5`, nil},
		{"array", `[23,43,"x",1.5]`, nil},
		{"null", `null`, nil},
		{"string", `"hello"`, nil},
		{"empty object", `{}`, nil},
		{"only fromid", `{"fromid":1}`, nil},
		{"missing fromid", `{"toid":43,"msg":"x","time":1.5}`, nil},
		{"missing toid", `{"fromid":23,"msg":"x","time":1.5}`, nil},
		{"missing msg", `{"fromid":23,"toid":43,"time":1.5}`, nil},
		{"missing time", `{"fromid":23,"toid":43,"msg":"x"}`, nil},
		{"null msg", `{"fromid":23,"toid":43,"msg":null,"time":1.5}`, nil},
		{"number msg", `{"fromid":23,"toid":43,"msg":5,"time":1.5}`, nil},
		{"null fromid", `{"fromid":null,"toid":43,"msg":"x","time":1.5}`, nil},
		{"fractional id", `{"fromid":2.5,"toid":43,"msg":"x","time":1.5}`, nil},
		{"negative id", `{"fromid":-1,"toid":43,"msg":"x","time":1.5}`, nil},
		{"exponent id", `{"fromid":1e3,"toid":43,"msg":"x","time":1.5}`, nil},
		{"bool id", `{"fromid":true,"toid":43,"msg":"x","time":1.5}`, nil},
		{"object id", `{"fromid":23,"toid":{},"msg":"x","time":1.5}`, nil},
		{"word time", `{"fromid":23,"toid":43,"msg":"x","time":"soon"}`, nil},
		{"null time", `{"fromid":23,"toid":43,"msg":"x","time":null}`, nil},
		{"bool time", `{"fromid":23,"toid":43,"msg":"x","time":true}`, nil},
		{"object time", `{"fromid":23,"toid":43,"msg":"x","time":{}}`, nil},
		{"empty string time", `{"fromid":23,"toid":43,"msg":"x","time":""}`, nil},
		{"out of range time", `{"fromid":23,"toid":43,"msg":"x","time":"1e400"}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := decodeElement("43-23", 5, tt.data)
			if tt.want == nil {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("decodeElement(%s) = %+v, %v; want errMalformed", tt.data, m, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeElement(%s): %v", tt.data, err)
			}
			if m != *tt.want {
				t.Fatalf("decodeElement(%s) = %+v, want %+v", tt.data, m, *tt.want)
			}
		})
	}
}

// TestDecodeElementRejectsNonFiniteTime: a time of "NaN" or "Infinity" (a
// string, which JSON allows and strconv.ParseFloat accepts) must make the
// element malformed. Otherwise History returns a Message that encoding/json
// cannot marshal, and one junk element breaks the whole page's frame.
func TestDecodeElementRejectsNonFiniteTime(t *testing.T) {
	t.Parallel()
	for _, ts := range []string{`"NaN"`, `"nan"`, `"Inf"`, `"+Inf"`, `"-Inf"`, `"Infinity"`, `"-infinity"`} {
		data := `{"fromid":23,"toid":43,"msg":"x","time":` + ts + `}`
		m, err := decodeElement("43-23", 1, data)
		if err == nil {
			_, jerr := json.Marshal(m)
			t.Errorf("decodeElement(%s) = time %v, nil error; want errMalformed (json.Marshal of it: %v)", data, m.Time, jerr)
		} else if !errors.Is(err, errMalformed) {
			t.Errorf("decodeElement(%s) = %v, want errMalformed", data, err)
		}
	}
}

// TestDeliveryPayloads: every payload a script publishes reads back as the
// delivery it was built from; a malformed one is refused.
func TestDeliveryPayloads(t *testing.T) {
	t.Parallel()
	text := "say \"hi\"\t<b>&\n你好 🎉\n"
	req := chat.SendRequest{From: "23", To: "bob", Text: text, Origin: "r1 c7"}
	stored := time.UnixMicro(1732567890500000)
	head, tail := messagePayload("bob-23", req, stored, []byte("1732567890.5"))
	receipt := appendFields(appendHead(nil, chat.KindReceipt, "", []string{"bob", "23"}, 0), "23", "bob")
	badge := appendFields(appendHead(nil, chat.KindUnread, "r1 c7", []string{"23"}, 0), "bob")
	for _, tc := range []struct {
		payload string
		want    chat.Delivery
	}{
		{string(head) + "57" + string(tail), chat.Delivery{Kind: chat.KindMessage, Origin: "r1 c7",
			Users: []string{"bob", "23"}, Stored: stored,
			Message: chat.Message{Conv: "bob-23", Seq: 57, From: "23", To: "bob", Text: text, Time: 1732567890.5}}},
		{string(receipt) + "\t12", chat.Delivery{Kind: chat.KindReceipt, Users: []string{"bob", "23"}, By: "23", With: "bob", Read: 12}},
		{string(badge) + "\t12\t3", chat.Delivery{Kind: chat.KindUnread, Origin: "r1 c7", Users: []string{"23"}, With: "bob", Read: 12, Unread: 3}},
		{string(appendFields(appendHead(nil, chat.KindTyping, "", []string{"bob"}, 0), "23")),
			chat.Delivery{Kind: chat.KindTyping, Users: []string{"bob"}, By: "23"}},
	} {
		got, ok := parseDelivery(tc.payload)
		if !ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseDelivery(%q) = %+v, %v; want %+v", tc.payload, got, ok, tc.want)
		}
	}
	for _, bad := range []string{
		"", "m", "x\t-\t1\t0\tz", "r\t-\t1\t0\t23\tbob", "r\t-\t1\t0\t23\tbob\tx",
		string(head) + "57" + string(tail[:bytes.IndexByte(tail, '\n')]), // no text
		"t\t-\t1\t0\t23\textra", "m\t-\t1\t0\ta\t1\tb\tc\t1.5\textra\nhi",
	} {
		if d, ok := parseDelivery(bad); ok {
			t.Errorf("parseDelivery(%q) = %+v, want refused", bad, d)
		}
	}
}
