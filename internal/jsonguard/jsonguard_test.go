package jsonguard

import (
	"encoding/json"
	"net"
	"reflect"
	"testing"
)

type Inner struct {
	S string
	M map[string]int
}

type sample struct {
	Inner
	P      *Inner
	L      []*Inner
	IP     net.IP
	Net    net.IPNet
	B      bool
	U      uint8
	F      float64
	hidden int
}

func TestPopulated(t *testing.T) {
	v, err := Populated(reflect.TypeFor[sample]())
	if err != nil {
		t.Fatal(err)
	}
	s := v.Interface().(*sample)
	one := Inner{S: "x", M: map[string]int{"x": 1}}
	want := sample{Inner: one, P: &one, L: []*Inner{&one}, IP: net.IPv4(10, 1, 2, 3).To4(),
		Net: net.IPNet{IP: net.IPv4(10, 1, 2, 3).To4(), Mask: net.CIDRMask(24, 32)}, B: true, U: 1, F: 1}
	if !reflect.DeepEqual(*s, want) {
		got, _ := json.Marshal(s)
		t.Errorf("Populated = %s", got)
	}
	if _, err := Populated(reflect.TypeFor[struct{ X any }]()); err == nil {
		t.Error("an interface field was filled")
	}
}
