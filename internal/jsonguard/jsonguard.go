// Package jsonguard helps the tests that hold local-ipam's hand-written JSON code (the
// result encoder, the config decoder) to the library types it stands in for: it builds
// values of those types with every field set, so that a field the types gain shows up in
// what encoding/json writes.
package jsonguard

import (
	"fmt"
	"net"
	"reflect"
)

// Populated returns a new *typ whose exported fields, at every depth, are all set to a
// value that is not the zero value: one element in each slice and map, "x" in each
// string, 1 in each number, true in each bool, 10.1.2.3 in each net.IP and a /24 in each
// net.IPMask. A field of a kind it cannot fill (an interface, a func, a channel) is an
// error naming it.
func Populated(typ reflect.Type) (reflect.Value, error) {
	v := reflect.New(typ)
	return v, fill(v.Elem(), typ.String())
}

func fill(v reflect.Value, path string) error {
	switch v.Type() {
	case reflect.TypeFor[net.IP]():
		v.Set(reflect.ValueOf(net.IPv4(10, 1, 2, 3).To4()))
		return nil
	case reflect.TypeFor[net.IPMask]():
		v.Set(reflect.ValueOf(net.CIDRMask(24, 32)))
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		return fill(v.Elem(), path)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				if err := fill(v.Field(i), path+"."+f.Name); err != nil {
					return err
				}
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		return fill(v.Index(0), path+"[0]")
	case reflect.Map:
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		if err := fill(k, path+" key"); err != nil {
			return err
		}
		if err := fill(e, path+" value"); err != nil {
			return err
		}
		v.Set(reflect.MakeMap(v.Type()))
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	default:
		return fmt.Errorf("%s: cannot fill a field of kind %s", path, v.Kind())
	}
	return nil
}
