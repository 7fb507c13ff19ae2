package ranges

import (
	"math/big"
	"net/netip"
	"testing"
)

func uint128Big(x Uint128) *big.Int {
	v := new(big.Int).Lsh(new(big.Int).SetUint64(x.Hi), 64)
	return v.Or(v, new(big.Int).SetUint64(x.Lo))
}

var two128 = new(big.Int).Lsh(big.NewInt(1), 128)

func TestUint128(t *testing.T) {
	max := Uint128{^uint64(0), ^uint64(0)}
	loMax := Uint128{0, ^uint64(0)}
	if got := max.Inc(); got != (Uint128{}) {
		t.Errorf("max.Inc() = %+v, want 0", got)
	}
	if got := loMax.Inc(); got != (Uint128{1, 0}) {
		t.Errorf("(2^64-1).Inc() = %+v, want 2^64", got)
	}
	if got, carry := max.Add64(2); got != (Uint128{0, 1}) || !carry {
		t.Errorf("max.Add64(2) = %+v, %v; want 1, carry", got, carry)
	}
	if got, carry := loMax.Add64(1); got != (Uint128{1, 0}) || carry {
		t.Errorf("(2^64-1).Add64(1) = %+v, %v; want 2^64, no carry", got, carry)
	}
	if got := (Uint128{1, 0}).Sub(Uint128{0, 1}); got != loMax {
		t.Errorf("2^64 - 1 = %+v", got)
	}
	if got := (Uint128{}).Sub(Uint128{0, 1}); got != max {
		t.Errorf("0 - 1 = %+v, want max", got)
	}
	for _, c := range []struct {
		x, y Uint128
		want int
	}{
		{Uint128{}, Uint128{}, 0}, {Uint128{0, 1}, Uint128{1, 0}, -1}, {Uint128{1, 0}, Uint128{0, ^uint64(0)}, 1},
		{Uint128{1, 2}, Uint128{1, 3}, -1}, {max, max, 0},
	} {
		if got := c.x.Cmp(c.y); got != c.want {
			t.Errorf("%+v.Cmp(%+v) = %d, want %d", c.x, c.y, got, c.want)
		}
	}
	m := netip.MustParseAddr
	for _, c := range []struct {
		a    string
		want Uint128
	}{
		{"10.1.2.3", Uint128{0, 0x0a010203}}, {"255.255.255.255", Uint128{0, 0xffffffff}},
		{"2001:db8::1", Uint128{0x20010db800000000, 1}}, {"::ffff:10.1.2.3", Uint128{0, 0xffff0a010203}},
	} {
		if got := ToUint128(m(c.a)); got != c.want {
			t.Errorf("ToUint128(%s) = %#x", c.a, got)
		}
		if got := c.want.Addr(m(c.a).Is6()); got != m(c.a) {
			t.Errorf("%#x.Addr = %s, want %s", c.want, got, c.a)
		}
	}
	// An IPv4 address from the low 32 bits, whatever is above them.
	if got := (Uint128{7, 0x1_0a000001}).Addr(false); got != m("10.0.0.1") {
		t.Errorf("Addr(false) of a larger number = %s", got)
	}
}

// FuzzUint128: Cmp, Add64, Inc and Sub agree with math/big modulo 2^128, and Add64's
// carry says whether the sum reached 2^128.
func FuzzUint128(f *testing.F) {
	f.Add(uint64(0), uint64(0), uint64(0), uint64(0))
	f.Add(^uint64(0), ^uint64(0), uint64(0), uint64(1))
	f.Add(uint64(0), ^uint64(0), uint64(1), uint64(0))
	f.Fuzz(func(t *testing.T, xh, xl, yh, yl uint64) {
		x, y := Uint128{xh, xl}, Uint128{yh, yl}
		bx, by := uint128Big(x), uint128Big(y)
		if got, want := x.Cmp(y), bx.Cmp(by); got != want {
			t.Fatalf("%+v.Cmp(%+v) = %d, want %d", x, y, got, want)
		}
		if got, want := uint128Big(x.Sub(y)), new(big.Int).Mod(new(big.Int).Sub(bx, by), two128); got.Cmp(want) != 0 {
			t.Fatalf("%+v.Sub(%+v) = %s, want %s", x, y, got, want)
		}
		sum := new(big.Int).Add(bx, new(big.Int).SetUint64(yl))
		got, carry := x.Add64(yl)
		if carry != (sum.Cmp(two128) >= 0) || uint128Big(got).Cmp(sum.Mod(sum, two128)) != 0 {
			t.Fatalf("%+v.Add64(%d) = %+v, %v; want %s", x, yl, got, carry, sum)
		}
		if inc := uint128Big(x.Inc()); inc.Cmp(new(big.Int).Mod(new(big.Int).Add(bx, big.NewInt(1)), two128)) != 0 {
			t.Fatalf("%+v.Inc() = %s", x, inc)
		}
	})
}
