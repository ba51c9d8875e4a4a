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
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return f, badFrame("invalid JSON frame: %s", jsonText(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return f, badFrame("a frame must be a JSON object")
	}
	var seen uint16
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
