package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// frameError is a client frame that cannot be decoded; its text is meant
// for the client.
type frameError struct{ msg string }

func (e *frameError) Error() string { return e.msg }

func badFrame(format string, args ...any) error {
	return &frameError{msg: fmt.Sprintf(format, args...)}
}

// decodeFrame decodes one client frame: a JSON object whose keys match the
// protocol's exactly (case-sensitive, as JSON is), each at most once.
// Unknown keys are ignored, so that clients may add fields; a key given
// twice, a value of the wrong JSON type, anything after the object, text
// that is not UTF-8 and a \u escape of an unpaired surrogate are errors
// whose text is meant for the client. encoding/json alone would match keys
// case-insensitively, let the last of two win, and store U+FFFD for a lone
// surrogate.
func decodeFrame(data []byte) (inFrame, error) {
	var f inFrame
	if !utf8.Valid(data) {
		return f, badFrame("frame is not valid UTF-8")
	}
	if loneSurrogate(data) {
		return f, badFrame(`frame holds a \u escape of an unpaired UTF-16 surrogate: not valid UTF-8 text`)
	}
	// The most common frames, flat objects of known keys with plain
	// values, are read by scanFlat. Other well-formed frames with plain
	// keys are decoded by json.Unmarshal, several times cheaper than a
	// token at a time. It is taken only when Unmarshal cannot differ from
	// the rules above: no error, and every top-level key either one the
	// protocol knows, given once, or one that no known key matches
	// case-insensitively.
	if f, ok := scanFlat(data); ok {
		return f, nil
	}
	if json.Unmarshal(data, &f) == nil && plainKeys(data) {
		return f, nil
	}
	return decodeTokens(data)
}

// scanFlat reads a frame that is one JSON object of known keys, each given
// once, whose values are strings without escapes or control characters,
// integers of at most 18 digits, true or false, of the type the key wants.
// data is valid UTF-8. It reports false for anything else, which the
// other decoders then read, error or not: it never refuses a frame itself.
func scanFlat(data []byte) (inFrame, bool) {
	var f inFrame
	var seen uint16
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return f, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return f, skipSpace(data, i+1) == len(data)
	}
	for {
		key, next, ok := scanRaw(data, i)
		if !ok {
			return f, false
		}
		bit, dst, _ := f.field(knownKey(key))
		if bit == 0 || seen&bit != 0 {
			return f, false
		}
		seen |= bit
		i = skipSpace(data, next)
		if i >= len(data) || data[i] != ':' {
			return f, false
		}
		i = skipSpace(data, i+1)
		if i >= len(data) {
			return f, false
		}
		switch dst := dst.(type) {
		case *string:
			v, next, ok := scanString(data, i)
			if !ok {
				return f, false
			}
			*dst, i = v, next
		case **string:
			v, next, ok := scanString(data, i)
			if !ok {
				return f, false
			}
			*dst, i = &v, next
		case **int64:
			v, next, ok := scanInt(data, i)
			if !ok {
				return f, false
			}
			*dst, i = &v, next
		case **int:
			v, next, ok := scanInt(data, i)
			if !ok {
				return f, false
			}
			n := int(v)
			*dst, i = &n, next
		case **bool:
			var v bool
			switch {
			case bytes.HasPrefix(data[i:], []byte("true")):
				v, i = true, i+4
			case bytes.HasPrefix(data[i:], []byte("false")):
				i += 5
			default:
				return f, false
			}
			*dst = &v
		default: // a list
			return f, false
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return f, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return f, skipSpace(data, i+1) == len(data)
		default:
			return f, false
		}
	}
}

// scanString reads the JSON string at data[i] if it holds no escape and
// no control character, and returns it and the index after it.
func scanString(data []byte, i int) (string, int, bool) {
	b, next, ok := scanRaw(data, i)
	return string(b), next, ok
}

// scanRaw is scanString without the copy: the string's bytes in data.
func scanRaw(data []byte, i int) ([]byte, int, bool) {
	if i >= len(data) || data[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return data[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// knownKey returns key as the protocol's string for it, without a copy,
// or "" for a key the protocol does not know.
func knownKey(key []byte) string {
	switch string(key) {
	case "type":
		return "type"
	case "id":
		return "id"
	case "to":
		return "to"
	case "text":
		return "text"
	case "with":
		return "with"
	case "before":
		return "before"
	case "limit":
		return "limit"
	case "seq":
		return "seq"
	case "peek":
		return "peek"
	case "users":
		return "users"
	case "watch":
		return "watch"
	}
	return ""
}

// scanInt reads the JSON integer of at most 18 digits at data[i], not
// followed by a fraction or an exponent, and returns it and the index
// after it.
func scanInt(data []byte, i int) (int64, int, bool) {
	neg := i < len(data) && data[i] == '-'
	if neg {
		i++
	}
	start := i
	var v int64
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		v = v*10 + int64(data[i]-'0')
		i++
	}
	digits := i - start
	if digits == 0 || digits > 18 || digits > 1 && data[start] == '0' {
		return 0, 0, false
	}
	if i < len(data) && (data[i] == '.' || data[i] == 'e' || data[i] == 'E') {
		return 0, 0, false
	}
	if neg {
		v = -v
	}
	return v, i, true
}

// decodeTokens decodes a frame a token at a time, enforcing the rules of
// decodeFrame and wording every error for the client.
func decodeTokens(data []byte) (inFrame, error) {
	var f inFrame
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return f, badFrame("invalid JSON frame: %s", jsonText(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return f, badFrame("a frame must be a JSON object")
	}
	var seen uint16
	var others map[string]struct{} // keys the protocol does not know
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return f, badFrame("invalid JSON frame: %s", jsonText(err))
		}
		key, _ := tok.(string) // inside an object, Token returns keys as strings
		bit, dst, want := f.field(key)
		if bit != 0 {
			if seen&bit != 0 {
				return f, badFrame("%q is given twice", key)
			}
			seen |= bit
		} else {
			if _, dup := others[key]; dup {
				return f, badFrame("%q is given twice", key)
			}
			if others == nil {
				others = map[string]struct{}{}
			}
			others[key] = struct{}{}
		}
		if dst == nil {
			var skip json.RawMessage
			dst = &skip
		}
		if err := dec.Decode(dst); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return f, badFrame("%q must be %s", key, want)
			}
			return f, badFrame("invalid JSON frame: %s", jsonText(err))
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return f, badFrame("invalid JSON frame: %s", jsonText(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return f, badFrame("a frame holds one JSON object and nothing after it")
	}
	return f, nil
}

// plainKeys reports whether the top-level keys of data, a valid JSON
// object, are such that json.Unmarshal decodes it as decodeTokens does:
// no key written with an escape or outside ASCII, no known key twice, no
// unknown key that matches a known one case-insensitively.
func plainKeys(data []byte) bool {
	var f inFrame
	var seen uint16
	var unknown [][]byte
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i++
	for {
		i = skipSpace(data, i)
		if i >= len(data) {
			return false
		}
		switch data[i] {
		case '}':
			return true
		case ',':
			i = skipSpace(data, i+1)
		}
		if i >= len(data) || data[i] != '"' {
			return false
		}
		end := i + 1
		for end < len(data) && data[end] != '"' {
			if c := data[end]; c == '\\' || c >= utf8.RuneSelf {
				return false
			}
			end++
		}
		if end >= len(data) {
			return false
		}
		key := data[i+1 : end]
		if bit, _, _ := f.field(string(key)); bit != 0 {
			if seen&bit != 0 {
				return false
			}
			seen |= bit
		} else if knownFold(key) {
			return false
		} else {
			// An unknown key given twice is refused too: the token
			// decoder says so. Frames hold few keys; a scan is cheap.
			for _, k := range unknown {
				if bytes.Equal(k, key) {
					return false
				}
			}
			unknown = append(unknown, key)
		}
		i = skipSpace(data, end+1)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		if i = skipValue(data, skipSpace(data, i+1)); i < 0 {
			return false
		}
	}
}

// knownFold reports whether key, ASCII, matches a known key
// case-insensitively (the known keys are lower-case ASCII).
func knownFold(key []byte) bool {
	var f inFrame
	bit, _, _ := f.field(string(bytes.ToLower(key)))
	return bit != 0
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index after the JSON value at data[i] (valid
// JSON), or -1.
func skipValue(data []byte, i int) int {
	depth := 0
	for i < len(data) {
		switch c := data[i]; c {
		case '"':
			i++
			for i < len(data) && data[i] != '"' {
				if data[i] == '\\' {
					i++
				}
				i++
			}
			i++
		case '{', '[':
			depth++
			i++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
			i++
		case ',':
			if depth == 0 {
				return i
			}
			i++
		default:
			i++
		}
		if depth == 0 && i <= len(data) && (i == len(data) || data[i] == ',' || data[i] == '}' || isSpace(data[i])) {
			if i > len(data) {
				return -1
			}
			return i
		}
	}
	return -1
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// field returns where the value of key goes, a bit that marks it seen, and
// what it must be; (0, nil, "") for a key the protocol does not know.
func (f *inFrame) field(key string) (uint16, any, string) {
	switch key {
	case "type":
		return 1 << 0, &f.Type, "a string"
	case "id":
		return 1 << 1, &f.ID, "a string"
	case "to":
		return 1 << 2, &f.To, "a string"
	case "text":
		return 1 << 3, &f.Text, "a string"
	case "with":
		return 1 << 4, &f.With, "a string"
	case "before":
		return 1 << 5, &f.Before, "an integer"
	case "limit":
		return 1 << 6, &f.Limit, "an integer"
	case "seq":
		return 1 << 9, &f.Seq, "an integer"
	case "peek":
		return 1 << 10, &f.Peek, "true or false"
	case "users":
		return 1 << 7, &f.Users, "a list of strings"
	case "watch":
		return 1 << 8, &f.Watch, "true or false"
	}
	return 0, nil, ""
}

// jsonText words a JSON syntax error without the package's prefix.
func jsonText(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of JSON"
	}
	s := err.Error()
	const prefix = "json: "
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		s = s[len(prefix):]
	}
	return s
}
