package usage

import (
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"testing"
)

func num(t *testing.T, s string) Count {
	t.Helper()
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("bad number %s", s)
	}
	return NewCount(n)
}

func TestCountReadable(t *testing.T) {
	for _, c := range []struct{ n, want string }{
		{"0", "0"},
		{"253", "253"},
		{"1099511627775", "1099511627775"}, // below 2^40: decimal
		{"1099511627776", "2^40"},
		{"18446744073709551614", "2^64-2"},                     // a /64 less its gateway
		{"18446744073709551600", "2^64-16"},                    // the demo's
		{"18446744073709551616", "2^64"},                       // exactly
		{"18446744073709551617", "2^64+1"},                     // just over
		{"1208925819614629174706174", "2^80-2"},                // a /48
		{"55340232221128654844", "3*2^64-4"},                   // three /64 ranges
		{"4740813226943354765311", "257*2^64-1"},               // 2^72 + 2^64 - 1
		{"340282366920938463463374607431768211456", "2^128"},   // every IPv6 address
		{"12345678901234567890123", "12345678901234567890123"}, // no shorter form
	} {
		if got := num(t, c.n).Readable(); got != c.want {
			t.Errorf("Readable(%s) = %q, want %q", c.n, got, c.want)
		}
		// Exact: the form evaluates back to the number.
		if got := eval(t, num(t, c.n).Readable()); got.String() != c.n {
			t.Errorf("Readable(%s) = %q, which is %s", c.n, num(t, c.n).Readable(), got)
		}
	}
}

// eval computes a Readable form: a decimal, or [m*]2^k[+d|-d].
func eval(t *testing.T, s string) *big.Int {
	t.Helper()
	if n, ok := new(big.Int).SetString(s, 10); ok {
		return n
	}
	m, rest := "1", s
	if i := strings.IndexByte(rest, '*'); i >= 0 {
		m, rest = rest[:i], rest[i+1:]
	}
	rest = strings.TrimPrefix(rest, "2^")
	k, d := rest, "0"
	if i := strings.IndexAny(rest, "+-"); i >= 0 {
		k, d = rest[:i], rest[i:]
	}
	mi, ok1 := new(big.Int).SetString(m, 10)
	ki, err := strconv.Atoi(k)
	di, ok2 := new(big.Int).SetString(strings.TrimPrefix(d, "+"), 10)
	if !ok1 || err != nil || !ok2 {
		t.Fatalf("cannot read %q", s)
	}
	return mi.Lsh(mi, uint(ki)).Add(mi, di)
}

func TestCountJSON(t *testing.T) {
	for _, c := range []struct{ n, want string }{
		{"0", "0"},
		{"253", "253"},
		{"9007199254740992", "9007199254740992"},   // 2^53: still a number
		{"9007199254740993", `"9007199254740993"`}, // 2^53+1: a string
		{"18446744073709551614", `"18446744073709551614"`},
	} {
		b, err := json.Marshal(num(t, c.n))
		if err != nil || string(b) != c.want {
			t.Errorf("Marshal(%s) = %s, %v; want %s", c.n, b, err, c.want)
		}
		var back Count
		if err := json.Unmarshal(b, &back); err != nil || back.String() != c.n {
			t.Errorf("Unmarshal(%s) = %s, %v; want %s", b, back, err, c.n)
		}
	}
	var bad Count
	for _, b := range []string{`"x"`, `1.5`, `true`, `"12a"`} {
		if err := json.Unmarshal([]byte(b), &bad); err == nil {
			t.Errorf("Unmarshal(%s): no error", b)
		}
	}
}
