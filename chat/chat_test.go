package chat

import (
	"testing"
)

func TestIsDecimal(t *testing.T) {
	for s, want := range map[string]bool{"0": true, "12": true, "012": false, "": false, "-1": false, "1e3": false} {
		if IsDecimal(s) != want {
			t.Errorf("IsDecimal(%q) = %v", s, !want)
		}
	}
}
