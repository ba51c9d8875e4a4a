package hub

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeFrame(t *testing.T) {
	str := func(s string) *string { return &s }
	i64 := func(n int64) *int64 { return &n }
	yes := true
	cases := []struct {
		in      string
		want    inFrame
		wantErr string // a substring of the error, "" for none
	}{
		{in: `{"type":"send","to":"43","text":"hi","id":"c1"}`,
			want: inFrame{Type: "send", To: "43", Text: str("hi"), ID: str("c1")}},
		{in: `{"type":"history","with":"43","before":5,"limit":2}`,
			want: inFrame{Type: "history", With: "43", Before: i64(5), Limit: func() *int { n := 2; return &n }()}},
		{in: `{"type":"presence","users":["a","b"],"watch":true}`,
			want: inFrame{Type: "presence", Users: []string{"a", "b"}, Watch: &yes}},
		{in: ` {"type":"ping","extra":{"nested":[1,{"x":null}]}} `, want: inFrame{Type: "ping"}},
		{in: `{"type":"send","text":null}`, want: inFrame{Type: "send"}},
		// Keys match exactly: "TEXT" is not "text".
		{in: `{"type":"send","text":"a","TEXT":"b"}`, want: inFrame{Type: "send", Text: str("a")}},
		{in: `{"Type":"ping"}`, want: inFrame{}},
		{in: `{"type":"send","text":"a","text":"b"}`, wantErr: `"text" is given twice`},
		{in: `{"type":"ping","type":"ping"}`, wantErr: `"type" is given twice`},
		{in: `{"type":"ping","foo":1,"foo":2}`, wantErr: `"foo" is given twice`},
		{in: `{"type":"ping","foo":1,"f\u006fo":2}`, wantErr: `"foo" is given twice`},
		{in: `{"type":5}`, wantErr: `"type" must be a string`},
		{in: `{"type":"history","before":1.5}`, wantErr: `"before" must be an integer`},
		{in: `{"type":"history","limit":"2"}`, wantErr: `"limit" must be an integer`},
		{in: `{"type":"presence","users":"a"}`, wantErr: `"users" must be a list of strings`},
		{in: `{"type":"presence","watch":1}`, wantErr: `"watch" must be true or false`},
		{in: `[1]`, wantErr: "must be a JSON object"},
		{in: `"x"`, wantErr: "must be a JSON object"},
		{in: `{"type":"ping"} {}`, wantErr: "nothing after it"},
		{in: `{"type":"ping"`, wantErr: "invalid JSON"},
		{in: `{"type" "ping"}`, wantErr: "invalid JSON"},
		{in: ``, wantErr: "invalid JSON"},
		{in: "{\"type\":\"\xff\"}", wantErr: "not valid UTF-8"},
		{in: `{"type":"send","text":"\ud800"}`, wantErr: "unpaired UTF-16 surrogate"},
	}
	for _, tc := range cases {
		got, err := decodeFrame([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want one saying %q", tc.in, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "json:") {
				t.Errorf("%s: error %q shows the package's prefix", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// FuzzDecodeFrame: no input panics the decoder; what it accepts is one
// valid JSON object of UTF-8 text, and whatever it decoded is what
// encoding/json reads from the same object.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"send","to":"43","text":"hi","id":"c1"}`,
		`{"type":"history","with":"43","before":120,"limit":50,"id":"c2"}`,
		`{"type":"presence","users":["43","65"],"watch":true,"id":"c5"}`,
		`{"type":"send","text":"\ud83d\ude00 \u00e9"}`,
		`{"type":"send","text":"a","TEXT":"b"}`,
		`{"type":"send","text":"a","text":"b"}`,
		`{"x":[{"y":[]}],"type":"ping"}`,
		`{"type":"send","text":"x\udc00"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeFrame(data)
		if err != nil {
			if _, ok := err.(*frameError); !ok {
				t.Fatalf("error %T %v is not a client error", err, err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		// With keys exact and unique, the two agree whenever no other key
		// differs from a known one only by case: encoding/json would
		// decode such a key into the known field (and may refuse its
		// value), where the protocol ignores it.
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(data, &keys); err != nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", data, err)
		}
		for k := range keys {
			if b, _, _ := got.field(k); b == 0 {
				if b, _, _ := got.field(strings.ToLower(k)); b != 0 {
					return
				}
			}
		}
		var std inFrame
		if err := json.Unmarshal(data, &std); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
		}
		if !reflect.DeepEqual(got, std) {
			t.Fatalf("%q: decoded %+v, encoding/json %+v", data, got, std)
		}
	})
}

// TestDecodeFrameKnowsEveryField: a field added to inFrame must be added
// to inFrame.field too, or the decoder would ignore it.
func TestDecodeFrameKnowsEveryField(t *testing.T) {
	var f inFrame
	typ := reflect.TypeOf(f)
	bits := map[uint16]string{}
	for i := range typ.NumField() {
		key := strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]
		bit, dst, want := f.field(key)
		if bit == 0 || dst == nil || want == "" || knownKey([]byte(key)) != key {
			t.Errorf("inFrame.%s (%q) is unknown to the decoder", typ.Field(i).Name, key)
			continue
		}
		if other, dup := bits[bit]; dup {
			t.Errorf("%q and %q share a bit", key, other)
		}
		bits[bit] = key
	}
}

// decodeSamples are frames on both sides of every rule decodeFrame's fast
// path must not change.
var decodeSamples = []string{
	`{"type":"send","to":"43","text":"hi","id":"c1"}`,
	`{"type":"history","with":"43","before":5,"limit":2}`,
	`{"type":"presence","users":["a","b"],"watch":true}`,
	` {"type":"ping","extra":{"nested":[1,{"x":null,"y":"}]\"\\"}]}} `,
	`{"type":"send","text":null,"id":null}`,
	`{"type":"send","text":"a","TEXT":"b"}`,
	`{"Type":"ping"}`,
	`{"tYpE":"ping","type":"send"}`,
	`{"type":"send","text":"a","text":"b"}`,
	`{"type":"ping","type":"ping"}`,
	`{"typ\u0065":"ping"}`,
	`{"typ\u0065":"ping","type":"send"}`,
	`{"type":"ping","\u017fend":1}`,
	`{"type":"ping","ſ":1,"K":2}`,
	`{"type":5}`,
	`{"type":"history","before":1.5}`,
	`{"type":"history","limit":"2"}`,
	`{"type":"presence","users":"a"}`,
	`{"type":"presence","watch":1}`,
	`{"type":"presence","users":null,"watch":null}`,
	`[1]`, `"x"`, `null`, `{}`, ` { } `,
	`{"type":"ping"} {}`,
	`{"type":"ping"`,
	`{"type":"send","text":"\ud83d\ude86 <&>"}`,
	"{\n\t\"type\" :\r\n \"ping\" , \"id\" : \"x\"\n}",
	`{"a":[],"b":{},"c":"","d":true,"e":false,"f":-1.5e3,"type":"ping"}`,
	`{"type":"history","before":01}`, `{"type":"history","before":-}`, `{"type":"history","before":-0}`,
	`{"type":"history","before":1e3}`, `{"type":"history","before":123456789012345678}`,
	`{"type":"history","before":1234567890123456789}`, `{"type":"history","limit":99999999999999999999}`,
	`{"type":"read","seq":-7,"peek":false}`, `{"type":"history","peek":truex}`, `{"type":"history","peek":tru}`,
	`{"type":"ping",}`, `{"type":"ping"}}`, `{"type":"ping"}x`, `{"type" "ping"}`, `{"type":"ping" "id":"x"}`,
	"{\"type\":\"send\",\"text\":\"a\tb\"}", `{"type":"send","text":"a\tb"}`, `{"type":"send","text":"",`,
	`{"type":"send","text":"café 🚆"}`, `{"type":"ping","id":7}`, `{"type":"ping","watch":"true"}`,
}

// TestScanFlatReadsCommonFrames: the frames clients send most are read by
// the flat scanner, to the same result as the token decoder.
func TestScanFlatReadsCommonFrames(t *testing.T) {
	for _, in := range []string{
		`{"type":"send","to":"43","text":"hi there 🚆","id":"c1"}`,
		` { "id" : "c2" , "type" : "history" , "with" : "43" , "before" : 120 , "limit" : 50 , "peek" : true } `,
		`{"type":"read","with":"43","seq":57,"id":"c3"}`,
		`{"type":"typing","to":"43"}`, `{"type":"ping"}`, `{}`,
	} {
		got, ok := scanFlat([]byte(in))
		want, err := decodeTokens([]byte(in))
		if !ok || err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: scanFlat %+v, %v; token decoder %+v, %v", in, got, ok, want, err)
		}
	}
}

// TestDecodeFrameFastPathAgrees: decodeFrame, whatever path it takes,
// answers exactly as the token decoder does.
func TestDecodeFrameFastPathAgrees(t *testing.T) {
	for _, in := range decodeSamples {
		checkDecodeAgrees(t, []byte(in))
	}
}

func FuzzDecodeFrameFastPath(f *testing.F) {
	for _, in := range decodeSamples {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecodeAgrees(t, data) })
}

func checkDecodeAgrees(t *testing.T, data []byte) {
	t.Helper()
	if !utf8.Valid(data) || loneSurrogate(data) {
		return // refused before either decoder runs
	}
	got, gotErr := decodeFrame(data)
	want, wantErr := decodeTokens(data)
	if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
		t.Fatalf("%s: error %v, token decoder %v", data, gotErr, wantErr)
	}
	if gotErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: %+v, token decoder %+v", data, got, want)
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	frame := []byte(`{"type":"send","to":"lg43","id":"c123456","text":"1234567890123456 padding padding padding padding 12"}`)
	for _, bc := range []struct {
		name   string
		decode func([]byte) (inFrame, error)
	}{{"fast", decodeFrame}, {"tokens", decodeTokens}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.decode(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
