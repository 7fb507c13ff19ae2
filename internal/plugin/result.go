package plugin

import (
	"os"
	"strconv"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// printResult prints an IPAM result in the config's version. For 1.0.0 and later it
// writes the JSON itself, byte for byte what types.PrintResult writes (sorted keys,
// four-space indent; result_test.go holds it to that): in a process that lives for one
// call, building encoding/json's reflection encoders for the result types costs more CPU
// than the whole allocation. Older versions go through the CNI library's conversion.
func printResult(r *current.Result, version string) error {
	switch version {
	case "1.0.0", "1.1.0":
	default:
		return types.PrintResult(r, version)
	}
	w := &jsonWriter{}
	w.open('{')
	w.key("cniVersion")
	w.str(version)
	if !r.DNS.IsEmpty() {
		w.key("dns")
		w.open('{')
		if r.DNS.Domain != "" {
			w.key("domain")
			w.str(r.DNS.Domain)
		}
		array(w, "nameservers", r.DNS.Nameservers, w.str)
		array(w, "options", r.DNS.Options, w.str)
		array(w, "search", r.DNS.Search, w.str)
		w.close('}')
	}
	array(w, "ips", r.IPs, func(ip *current.IPConfig) {
		w.open('{')
		w.key("address")
		w.str(ip.Address.String())
		if len(ip.Gateway) > 0 {
			w.key("gateway")
			w.str(ip.Gateway.String())
		}
		if ip.Interface != nil {
			w.key("interface")
			w.num(*ip.Interface)
		}
		w.close('}')
	})
	array(w, "routes", r.Routes, func(rt *types.Route) {
		w.open('{')
		if rt.AdvMSS != 0 {
			w.key("advmss")
			w.num(rt.AdvMSS)
		}
		w.key("dst")
		w.str(rt.Dst.String())
		if len(rt.GW) > 0 {
			w.key("gw")
			w.str(rt.GW.String())
		}
		if rt.MTU != 0 {
			w.key("mtu")
			w.num(rt.MTU)
		}
		if rt.Priority != 0 {
			w.key("priority")
			w.num(rt.Priority)
		}
		if rt.Scope != nil {
			w.key("scope")
			w.num(*rt.Scope)
		}
		if rt.Table != nil {
			w.key("table")
			w.num(*rt.Table)
		}
		w.close('}')
	})
	w.close('}')
	_, err := os.Stdout.Write(w.b)
	return err
}

// jsonWriter writes indented JSON as json.MarshalIndent(v, "", "    ") does.
type jsonWriter struct {
	b     []byte
	depth int
	first bool // nothing written yet in the current object or array
}

func (w *jsonWriter) newline() {
	w.b = append(w.b, '\n')
	for i := 0; i < w.depth; i++ {
		w.b = append(w.b, "    "...)
	}
}

func (w *jsonWriter) open(c byte) {
	w.b = append(w.b, c)
	w.depth++
	w.first = true
}

func (w *jsonWriter) close(c byte) {
	w.depth--
	if !w.first {
		w.newline()
	}
	w.b = append(w.b, c)
	w.first = false
}

// item starts an element of an array.
func (w *jsonWriter) item() {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.newline()
	w.first = false
}

func (w *jsonWriter) key(k string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.newline()
	w.first = false
	w.str(k)
	w.b = append(w.b, ": "...)
}

func (w *jsonWriter) num(n int) { w.b = strconv.AppendInt(w.b, int64(n), 10) }

// array writes the key k and an array of xs, each element written by elem; nothing when
// xs is empty (the library's omitempty).
func array[T any](w *jsonWriter, k string, xs []T, elem func(T)) {
	if len(xs) == 0 {
		return
	}
	w.key(k)
	w.open('[')
	for _, x := range xs {
		w.item()
		elem(x)
	}
	w.close(']')
}

// str quotes s as the library's output has it: encoding/json's escaping (HTML-safe),
// invalid UTF-8 replaced by U+FFFD.
func (w *jsonWriter) str(s string) {
	const hex = "0123456789abcdef"
	w.b = append(w.b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				w.b = append(w.b, '\\', c)
			case c == '\n':
				w.b = append(w.b, '\\', 'n')
			case c == '\r':
				w.b = append(w.b, '\\', 'r')
			case c == '\t':
				w.b = append(w.b, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				w.b = append(w.b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				w.b = append(w.b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			// The library marshals twice (through a map): the \ufffd of the first pass
			// comes out of the second as the character itself.
			w.b = append(w.b, "\uFFFD"...)
		case r == '\u2028' || r == '\u2029':
			w.b = append(w.b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			w.b = append(w.b, s[i:i+size]...)
		}
		i += size
	}
	w.b = append(w.b, '"')
}
