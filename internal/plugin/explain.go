package plugin

import (
	"bufio"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/local-ipam/local-ipam/internal/usage"
	"github.com/local-ipam/local-ipam/pkg/allocator"
	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// What a failed CNI call tells the operator beyond host-local's message: in the CNI
// error's details, which runtimes log with the message.

// warnTypos writes one line on stderr for each key of the config that looks like a
// misspelling of one local-ipam reads (runtimes log a plugin's stderr). The call goes on:
// unknown keys are accepted, as host-local accepts them.
func warnTypos(c *config.Config) {
	for _, f := range c.Typos {
		fmt.Fprintf(os.Stderr, "local-ipam: %s (at %s)\n", f.Message, f.Path)
	}
}

// noFreeDetails gives ADD's code 100 its details: the network, what each range set that
// has no address left holds, and the commands that show and free its reservations (with
// freeOnReboot when reservations made before this machine booted are there). host-local's
// message stays as it is.
func noFreeDetails(err error, c *config.Config, st Network) error {
	var te *types.Error
	if !errors.As(err, &te) || te.Code != cnierr.NoFreeAddress {
		return err
	}
	avail, aerr := allocator.Available(st, c.Pool)
	if aerr != nil {
		avail = nil
	}
	return &types.Error{Code: te.Code, Msg: te.Msg, Details: "network " + c.Name + ": " + fullDetails(c, st, avail)}
}

// notReady is why an ADD could not succeed now (STATUS's code 50; usage's "not ready"):
// the message, and what to do, worked out only when asked for (usage shows the message).
type notReady struct {
	msg     string
	details func() string
}

func (e *notReady) Error() string { return e.msg }

func unready(msg, details string) *notReady {
	return &notReady{msg, func() string { return details }}
}

// fullDetails describes each range set avail says has no free address, then the
// remedies.
func fullDetails(c *config.Config, st Network, avail []bool) string {
	var sets []string
	for i, ok := range avail {
		if !ok {
			sets = append(sets, describe(i, c.Pool.Sets[i], c.Pool.Exclude))
		}
	}
	if len(sets) == 0 {
		return remedies(c, st)
	}
	return strings.Join(sets, "; ") + ". " + remedies(c, st)
}

// assignable is set as ADD may give it out: each range without its gateway, in
// host-local's "start-end" form joined by commas (a lone address as itself): for a /30
// whose gateway is the first address, only the second.
func assignable(set ranges.Set) string {
	var parts []string
	piece := func(from, to netip.Addr) {
		switch from.Compare(to) {
		case 0:
			parts = append(parts, from.String())
		case -1:
			parts = append(parts, from.String()+"-"+to.String())
		}
	}
	for _, r := range set {
		if !r.Contains(r.Gateway) {
			piece(r.Start, r.End)
			continue
		}
		if r.Gateway != r.Start {
			piece(r.Start, r.Gateway.Prev())
		}
		if r.Gateway != r.End {
			piece(r.Gateway.Next(), r.End)
		}
	}
	if len(parts) == 0 {
		return "no address"
	}
	return strings.Join(parts, ",")
}

// describe says what range set idx holds, for an error that says it has no address to
// give: its assignable addresses, how many (exactly, usage's short form for huge ones),
// the gateways left out, and how many of them are excluded.
func describe(idx int, set ranges.Set, excl ranges.Exclusions) string {
	size, excluded := new(big.Int), new(big.Int)
	one := big.NewInt(1)
	var gws []string
	for _, r := range set {
		size.Add(size, ranges.Span(r.Start, r.End))
		excluded.Add(excluded, excl.Count(r.Start, r.End))
		if r.Contains(r.Gateway) {
			size.Sub(size, one)
			gws = append(gws, r.Gateway.String())
			if _, ok := excl.Covering(r.Gateway); ok {
				excluded.Sub(excluded, one)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "range set %d assigns %s (%s address", idx, assignable(set), usage.NewCount(size).Readable())
	if size.Cmp(one) != 0 {
		b.WriteString("es")
	}
	switch len(gws) {
	case 0:
	case 1:
		fmt.Fprintf(&b, "; the gateway %s is never assigned", gws[0])
	default:
		fmt.Fprintf(&b, "; the gateways %s are never assigned", strings.Join(gws, ", "))
	}
	if size.Sign() > 0 && excluded.Cmp(size) == 0 {
		// Nothing is reserved: list and release cannot help.
		b.WriteString("), every one of them excluded by ipam.exclude: none can be assigned until the exclusions change")
		return b.String()
	}
	fmt.Fprintf(&b, "), %s of them excluded, the rest reserved", usage.NewCount(excluded).Readable())
	return b.String()
}

// remedies names the operator's commands for c's network, and freeOnReboot when it would
// help.
func remedies(c *config.Config, st Network) string {
	net := "--conf FILE"
	if c.Store.Type != config.StoreEtcd {
		net = "--network " + shellWord(c.Name)
		if c.DataDir != config.DefaultDataDir {
			net += " --data-dir " + shellWord(c.DataDir)
		}
	}
	s := fmt.Sprintf("Who holds them: local-ipam list %s; counts: local-ipam usage --conf FILE (the network config file); "+
		"free a gone container's: local-ipam release %s --container ID", net, net)
	if n := fromEarlierBoot(c, st); n > 0 && !c.FreeOnReboot {
		what := "1 reservation predates"
		if n > 1 {
			what = fmt.Sprintf("%d reservations predate", n)
		}
		s += "; " + what + ` this machine's boot: "freeOnReboot": true in the ipam section frees such reservations at the first call after a reboot`
	}
	return s
}

// fromEarlierBoot counts the reservations of this machine made before it booted (0 when
// the boot time or the reservations cannot be read: a hint, not a verdict).
func fromEarlierBoot(c *config.Config, st Network) int {
	boot, ok := bootTime()
	if !ok {
		return 0
	}
	n := 0
	_ = st.List("", func(e store.Entry) error {
		if (e.Node == "" || e.Node == c.Store.Node) && !e.Created.IsZero() && e.Created.Before(boot) {
			n++
		}
		return nil
	})
	return n
}

// bootTime is when this machine booted (btime of /proc/stat).
func bootTime() (time.Time, bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(sec, 0), err == nil
		}
	}
	return time.Time{}, false
}

// storeAdvice is the details of STATUS's code 50 when the store cannot be used (err, from
// opening or reading it) or written (writing).
func storeAdvice(c *config.Config, err error, writing bool) string {
	code := cnierr.Code(err)
	if c.Store.Type == config.StoreEtcd {
		switch {
		case writing:
			return "etcd refuses writes: check the cluster's alarms (etcdctl alarm list; a full space quota refuses every write) and the user's permissions"
		case code == cnierr.TryAgainLater:
			return fmt.Sprintf("check that the etcd endpoints %s answer within %s, and ipam.store's TLS files and credentials",
				strings.Join(c.Store.Endpoints, ","), c.Store.Timeout)
		}
		return "the message says what the store refused; docs/ETCD.md says what to do about each case, and local-ipam list --conf FILE shows the reservations"
	}
	dir := filepath.Join(c.DataDir, c.Name)
	switch {
	case writing:
		return fmt.Sprintf("ADD would fail with code 5: free space on the file system of %s, mount it read-write, or let this user write there; "+
			"local-ipam list --network %s --data-dir %s reads the reservations meanwhile", dir, shellWord(c.Name), shellWord(c.DataDir))
	case code == cnierr.TryAgainLater:
		return fmt.Sprintf("another process holds %s/lock: a call that hangs, or an operator's tool; local-ipam list --network %s --data-dir %s reads without the lock",
			dir, shellWord(c.Name), shellWord(c.DataDir))
	case code == cnierr.StoreCorrupt:
		return fmt.Sprintf("%s is not what local-ipam keeps there (a symlink, or not a directory): look at it, and move it aside if it is not the network's", dir)
	}
	return fmt.Sprintf("check that %s can be created or opened and written by this user", dir)
}

// shellWord quotes s for a shell when it needs it.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:=+,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
