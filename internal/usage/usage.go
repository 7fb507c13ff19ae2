// Package usage is the report of the operator's usage command: per network and range
// set, the addresses of the pool, in use, excluded and free, with exact counts, and
// whether the network can serve an ADD now. local-ipam writes it as a table or JSON;
// local-ipam-metrics reads that JSON and writes it in the Prometheus text format.
package usage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
)

// Report is the usage of the networks of one config or config directory.
type Report struct {
	Networks []Network `json:"networks"`
	// Errors are the networks that could not be read or counted.
	Errors []Failure `json:"errors"`
}

// Network is one network's usage.
type Network struct {
	Network string   `json:"network"`
	File    string   `json:"file,omitempty"`
	DataDir string   `json:"dataDir,omitempty"`
	Store   []string `json:"etcdEndpoints,omitempty"`
	// Ready is STATUS's answer: an ADD could succeed now. NotReady says why not.
	Ready    bool   `json:"ready"`
	NotReady string `json:"notReady,omitempty"`
	Sets     []Set  `json:"rangeSets"`
}

// Set is one range set's usage (ranges.Usage, and its percent used).
type Set struct {
	Set      int     `json:"set"`
	Ranges   string  `json:"ranges"`
	Family   string  `json:"family"` // "ipv4" or "ipv6"
	Size     Count   `json:"size"`
	InUse    Count   `json:"inUse"`
	Excluded Count   `json:"excluded"`
	Free     Count   `json:"free"`
	Percent  float64 `json:"percentUsed"`
}

// Failure is a network that could not be read or counted: its config file, its name
// when the config gave one, and why.
type Failure struct {
	File    string `json:"file,omitempty"`
	Network string `json:"network,omitempty"`
	Error   string `json:"error"`
}

// Count is an exact number of addresses (an IPv6 range set may hold up to 2^128). In
// JSON it is a number up to 2^53 and a decimal string above: 2^53 is where readers that
// hold numbers as float64 (jq, JavaScript) start to round.
type Count struct{ n *big.Int }

// maxJSONNumber is 2^53, the largest count written as a JSON number.
var maxJSONNumber = new(big.Int).Lsh(big.NewInt(1), 53)

// NewCount makes a Count of n (which it keeps).
func NewCount(n *big.Int) Count { return Count{n} }

// Int is the count (0 for the zero Count).
func (c Count) Int() *big.Int {
	if c.n == nil {
		return new(big.Int)
	}
	return c.n
}

// Float64 is the count rounded to the nearest float64 (exact up to 2^53).
func (c Count) Float64() float64 {
	f, _ := new(big.Float).SetInt(c.Int()).Float64()
	return f
}

func (c Count) String() string { return c.Int().String() }

// MarshalJSON writes a number up to 2^53, a decimal string above.
func (c Count) MarshalJSON() ([]byte, error) {
	n := c.Int()
	if n.CmpAbs(maxJSONNumber) <= 0 {
		return []byte(n.String()), nil
	}
	return []byte(strconv.Quote(n.String())), nil
}

// UnmarshalJSON reads either form.
func (c *Count) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if len(s) > 0 && s[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return fmt.Errorf("address count %s is not a whole number", b)
	}
	c.n = n
	return nil
}

// Readable writes the count for a person, exactly: in decimal up to 2^40, and above in
// the shorter of decimal and a power-of-two form, m*2^k+d or m*2^k-d ("2^64-2" for a
// /64 less its gateway).
func (c Count) Readable() string {
	n := c.Int()
	dec := n.String()
	if n.Sign() <= 0 || n.BitLen() <= 40 {
		return dec
	}
	best := dec
	for k := n.BitLen() + 1; k >= 32; k-- {
		pow := new(big.Int).Lsh(big.NewInt(1), uint(k))
		// m: n/2^k rounded to the nearest integer, at least 1.
		m := new(big.Int).Add(n, new(big.Int).Rsh(pow, 1))
		m.Rsh(m, uint(k))
		if m.Sign() == 0 {
			m.SetInt64(1)
		}
		d := new(big.Int).Sub(n, new(big.Int).Mul(m, pow))
		s := "2^" + strconv.Itoa(k)
		if m.Cmp(big.NewInt(1)) != 0 {
			s = m.String() + "*" + s
		}
		switch d.Sign() {
		case 1:
			s += "+" + d.String()
		case -1:
			s += d.String()
		}
		if len(s) < len(best) {
			best = s
		}
	}
	return best
}
