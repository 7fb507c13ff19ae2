package plugin

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
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

// noFreeDetails completes the details of ADD's code 100 (the allocator says what the
// range set holds): the network, the commands that show and free its reservations, and
// freeOnReboot when reservations made before this machine booted are there.
func noFreeDetails(err error, c *config.Config, st Network) error {
	var te *types.Error
	if !errors.As(err, &te) || te.Code != cnierr.NoFreeAddress {
		return err
	}
	return &types.Error{Code: te.Code, Msg: te.Msg, Details: fmt.Sprintf("network %s: %s. %s", c.Name, te.Details, remedies(c, st))}
}

// remedies names the operator's commands for c's network, and freeOnReboot when it would
// help.
func remedies(c *config.Config, st Network) string {
	var where, release string
	if c.Store.Type == config.StoreEtcd {
		where = "--conf FILE"
		release = where
	} else {
		where = "--network " + shellWord(c.Name)
		if c.DataDir != config.DefaultDataDir {
			where += " --data-dir " + shellWord(c.DataDir)
		}
		release = where
	}
	s := fmt.Sprintf("Who holds them: local-ipam list %s; counts: local-ipam usage --conf FILE (the network config file); "+
		"free a gone container's: local-ipam release %s --container ID", where, release)
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
	dir := c.DataDir + "/" + c.Name
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
