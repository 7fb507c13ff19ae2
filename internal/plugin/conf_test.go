package plugin

import (
	"slices"
	"testing"
)

// TestConfFromStdin: the hand-off's command line is the one parsed, every flag kept with
// its value and --conf replaced by --conf=-, however the flags were spelled (a value that
// looks like a flag included).
func TestConfFromStdin(t *testing.T) {
	for _, c := range []struct{ args, want []string }{
		{[]string{"--conf", "/dev/fd/63", "--json"}, []string{"release", "--json=true", "--conf=-"}},
		{[]string{"-conf=-"}, []string{"release", "--conf=-"}},
		{[]string{"--container", "--conf", "--conf", "f", "--ifname=eth0"}, []string{"release", "--container=--conf", "--ifname=eth0", "--conf=-"}},
	} {
		fs := newFlags("release")
		fs.String(confFlag, "", "")
		fs.String("container", "", "")
		fs.String("ifname", "", "")
		fs.Bool("json", false, "")
		if err := parse(fs, c.args); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := confFromStdin(fs); !slices.Equal(got, c.want) {
			t.Errorf("%v: hand-off arguments %q, want %q", c.args, got, c.want)
		}
	}
}
