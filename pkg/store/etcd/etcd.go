// Package etcd is a store.Store kept in etcd v3, so that every machine of a cluster
// allocates from one pool. There is no lock: each reservation is a compare-and-create
// transaction on the address's key, so any number of processes on any number of machines
// reserve concurrently without ever handing out an address twice. A bitmap of pages kept
// in the same transactions answers FirstFree in a bounded number of round trips whatever
// the size of the pool. The key layout is described in keys.go.
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/status"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/ranges"
	"github.com/local-ipam/local-ipam/pkg/store"
)

// Config says where the cluster is and who this machine is. A network config's store
// section (config.StoreConf) comes with its defaults filled in; a direct caller may leave
// Prefix and Timeout empty, and gets the same defaults (see withDefaults).
type Config struct {
	Endpoints []string // e.g. http://127.0.0.1:2379
	Prefix    string   // key prefix, config.DefaultEtcdPrefix when empty
	// TLS: a client certificate is optional; https endpoints need a CA or system roots.
	CertFile, KeyFile, TrustedCAFile string
	Username, Password               string // etcd authentication, optional
	// Timeout bounds the whole life of a Store (one CNI call), dial and authentication
	// included; config.DefaultEtcdTimeout when 0.
	Timeout time.Duration
	Node    string // this machine's name; records are tagged with it. Required.
	// Machine is this machine's ID, which the node name is bound to (node.go); read from
	// MachineIDFiles when empty, and only by what needs it (ADD, GC, freeOnReboot).
	Machine string
	// BlockSize is the number of addresses of a node-affine block (blocks.go): a power of
	// two from 8 to 4,096; 0 for none (one cluster-wide round robin). A network config's
	// store section defaults it to config.DefaultBlockSize; a direct caller's 0 is none.
	BlockSize int
}

// Record is one reservation, as Records reports it.
type Record struct {
	Addr    netip.Addr
	Owner   store.Owner
	Node    string
	Created time.Time
}

// Store is one network's reservations in etcd, opened for one call.
type Store struct {
	cfg     Config
	network string
	base    string // "<prefix>/<network>/"
	cli     *clientv3.Client
	ctx     context.Context // carries the deadline of the call (or of a long one's step)
	cancel  context.CancelFunc
	root    context.Context // the client's: no deadline, canceled by Close
	stop    context.CancelFunc

	pages   map[pageID]*page
	markers *markers // the full markers last read
	// prefetched: the ID-only owner's addresses, read along with an owner's (see Owned).
	prefetched *owned
	// held: reservations read by Owned or made by Reserve in this call, so that Release
	// need not read them again.
	held map[netip.Addr]holding
	// last: the cursors, read once by Open's probe.
	last map[int]netip.Addr

	lastMore bool // more cursors than Open read: LastReserved reads the others

	node nodeState // this node's record, read by Open (node.go)
	// guards: for each owner key Owned read, the revision it was read at. Reservations
	// for that owner go through only if nothing changed the owner's reservations since
	// (see reserve): the allocator's duplicate check holds across machines.
	guards map[string]int64
	// made: for each owner key, the reservation this Store made for it in each range set
	// (ReserveAt: an ADD's, one a set). The owner's reservation in another set goes
	// through only if they are all still there (see reserve): a DEL of the same
	// attachment that freed one meanwhile fails the ADD rather than let it answer an
	// address the store has freed.
	made map[string]map[int]holding
	// grown: owner keys a Release found a reservation of made since Owned read them (see
	// release); the allocator's DEL reads the owner again (OwnedStale).
	grown map[string]bool

	// Page geometry: pb is log2 of the addresses of a page (a block with blocks), pbytes
	// its bitmap's size; the key prefixes of pages, full markers and cursors.
	pb, pbytes                int
	pagePre, fullPre, lastPre string

	blk blockState // node-affine blocks (blocks.go)

	rt   int // etcd round trips so far
	once sync.Once
}

type holding struct {
	key  string // owner key
	node string
	rev  int64      // CreateRevision of the reservation
	addr netip.Addr // in made only
}

var (
	_ store.Store          = (*Store)(nil)
	_ store.CursorReserver = (*Store)(nil)
)

// A CNI plugin's stdout is the protocol and its stderr is read by people: gRPC's own
// logger (which etcd's client does not silence) must say nothing.
func init() {
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, io.Discard))
}

// validNode reports whether s can name a node: a network name's rules (it is one key
// segment), and stricter: no line break either.
func validNode(s string) bool {
	return store.CheckNetworkName(s) == nil && !strings.ContainsAny(s, "\r\n")
}

// Open connects to the cluster and returns network's store. It fails with code 11 within
// cfg.Timeout when etcd cannot be reached or has no quorum.
func Open(cfg Config, network string) (*Store, error) {
	if err := store.CheckNetworkName(network); err != nil {
		return nil, err
	}
	if !validNode(cfg.Node) {
		return nil, cnierr.New(cnierr.InvalidConfig, "", "invalid etcd node name %q (required; no '/', NUL or line break)", cfg.Node)
	}
	if !validBlockSize(cfg.BlockSize) {
		return nil, cnierr.New(cnierr.InvalidConfig, "", "invalid etcd block size %d (a power of two from 8 to 4096, or 0 for none)", cfg.BlockSize)
	}
	// The call's deadline starts now: dialing and authenticating spend it too.
	cfg = withDefaults(cfg)
	deadline := time.Now().Add(cfg.Timeout)
	cli, root, stop, cfg, err := dial(cfg, deadline)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg: cfg, network: network, base: cfg.Prefix + "/" + network + "/",
		cli: cli, root: root, stop: stop,
		pages: map[pageID]*page{}, held: map[netip.Addr]holding{}, last: map[int]netip.Addr{},
		guards: map[string]int64{},
	}
	s.setGeometry()
	s.ctx, s.cancel = context.WithDeadline(s.root, deadline)
	// clientv3.New does not fail on a dead endpoint: a linearizable read proves that the
	// cluster is reachable and has a leader with quorum. It reads the cursors, which the
	// allocator needs next anyway, and the node's record (node.go).
	var resp *clientv3.TxnResponse
	err = s.do("read the cursors of "+network, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).Then(
			clientv3.OpGet(s.base+s.lastPre, clientv3.WithPrefix(), clientv3.WithLimit(1024)),
			clientv3.OpGet(s.bootKey()),
			clientv3.OpGet(s.blockSizeKey()),
			clientv3.OpGet(s.base+"page/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1)),
		).Commit()
		return err
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	s.setNode(firstKV(resp, 1), resp.Header.Revision)
	if err := s.checkBlockSize(firstKV(resp, 2), firstKV(resp, 3) != nil); err != nil {
		s.Close()
		return nil, err
	}
	cursors := resp.Responses[0].GetResponseRange()
	s.lastMore = cursors.More
	for _, kv := range cursors.Kvs {
		set, err := strconv.Atoi(strings.TrimPrefix(string(kv.Key), s.base+s.lastPre))
		if err != nil {
			continue // not a cursor of ours
		}
		// An unreadable cursor restarts the walk, as on disk.
		a, _ := ranges.ParseAddr(string(kv.Value))
		s.last[set] = a
	}
	return s, nil
}

// withDefaults fills what a direct caller left empty with the defaults of a network
// config's store section, which pkg/config defines.
func withDefaults(cfg Config) Config {
	if cfg.Timeout <= 0 {
		cfg.Timeout = config.DefaultEtcdTimeout
	}
	if cfg.Prefix == "" {
		cfg.Prefix = config.DefaultEtcdPrefix
	}
	return cfg
}

// dial makes the client and its context (no deadline: each call sets its own, see
// renew); it does not talk to etcd, unless authentication is configured, which needs a
// token: that is got before deadline. cfg has its defaults (withDefaults).
func dial(cfg Config, deadline time.Time) (*clientv3.Client, context.Context, context.CancelFunc, Config, error) {
	cfg.Prefix = strings.TrimRight(cfg.Prefix, "/")
	if len(cfg.Endpoints) == 0 {
		return nil, nil, nil, cfg, cnierr.New(cnierr.InvalidConfig, "", "no etcd endpoints configured")
	}
	tlsCfg, err := tlsConfig(cfg)
	if err != nil {
		return nil, nil, nil, cfg, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints,
		// Bounds the authentication, the only request made here (0 would mean none).
		DialTimeout: max(time.Until(deadline), time.Millisecond),
		TLS:         tlsCfg,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zap.NewNop(),
		Context:     ctx,
		// No keepalive pings: a killed member's connection is reset by its kernel, a
		// vanished machine is bounded by the call's deadline, and pings more frequent
		// than the server allows (5s) would get the connection closed.
	})
	if err != nil {
		cancel()
		return nil, nil, nil, cfg, mapErr(cfg, err, "connect")
	}
	return cli, ctx, cancel, cfg, nil
}

// tlsConfig builds the client's TLS settings: needed for https endpoints (system roots
// unless a CA is given) and whenever a certificate or CA is configured.
func tlsConfig(cfg Config) (*tls.Config, error) {
	https := false
	for _, ep := range cfg.Endpoints {
		if strings.HasPrefix(strings.ToLower(ep), "https://") {
			https = true
		}
	}
	if cfg.CertFile == "" && cfg.KeyFile == "" && cfg.TrustedCAFile == "" && !https {
		return nil, nil
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, cnierr.New(cnierr.InvalidConfig, "", "etcd TLS: a client certificate needs both certFile and keyFile")
	}
	// Checked here, so that a wrong file is a config error naming it: the client library
	// would skip a CA file without certificates, and fail later on the connection.
	if cfg.TrustedCAFile != "" {
		pem, err := os.ReadFile(cfg.TrustedCAFile)
		if err != nil {
			return nil, cnierr.New(cnierr.InvalidConfig, err.Error(), "etcd TLS: cannot read the CA file %s", cfg.TrustedCAFile)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, cnierr.New(cnierr.InvalidConfig, "", "etcd TLS: no PEM certificate in the CA file %s", cfg.TrustedCAFile)
		}
	}
	if cfg.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile); err != nil {
			return nil, cnierr.New(cnierr.InvalidConfig, err.Error(), "etcd TLS: bad client certificate %s or key %s", cfg.CertFile, cfg.KeyFile)
		}
	}
	info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.TrustedCAFile, Logger: zap.NewNop()}
	c, err := info.ClientConfig()
	if err != nil {
		return nil, cnierr.New(cnierr.InvalidConfig, err.Error(), "etcd TLS: bad certificate, key or CA (%s, %s, %s)", cfg.CertFile, cfg.KeyFile, cfg.TrustedCAFile)
	}
	return c, nil
}

func (s *Store) String() string { return s.base }

// RoundTrips is the number of requests this Store has sent to etcd (retries included):
// what tests and benchmarks check the cost of a call by.
func (s *Store) RoundTrips() int { return s.rt }

// Commit implements store.Store. Every change is its own transaction, made durable by
// etcd before it returns: nothing is pending.
func (s *Store) Commit() error { return nil }

// Close implements store.Store: it closes the connection. It may be called more than once.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.stop()
		_ = s.cli.Close() // local: it only reports the canceled context
	})
	return nil
}

// renew starts a deadline of cfg.Timeout for what follows: at Open for the whole of an
// ordinary call, and before each step of a long one (each batch of GC and
// FreeOnReboot), so that freeing tens of thousands of one machine's reservations is not
// cut short while every step stays bounded (a dead cluster still fails within the
// timeout).
func (s *Store) renew() {
	if s.cancel != nil {
		s.cancel()
	}
	s.ctx, s.cancel = context.WithTimeout(s.root, s.cfg.Timeout)
}

// do runs one etcd request, again on errors that say "try again" (a lost leader, a member
// killed under the request) until the call's deadline; it counts round trips. retried
// tells the caller that an earlier attempt's outcome is unknown.
func (s *Store) doRetried(what string, f func(ctx context.Context) error) (retried bool, err error) {
	for attempt := 0; ; attempt++ {
		s.rt++
		err = f(s.ctx)
		if err == nil && loseAnswers.Load() > 0 && loseAnswers.Add(-1) >= 0 {
			err = errLost // a test's: as if the connection broke after the request was applied
			if f := afterLost; f != nil {
				f()
			}
		}
		if err == nil {
			return retried, nil
		}
		if s.ctx.Err() != nil || !transient(err) {
			return retried, mapErr(s.cfg, err, what)
		}
		retried = true
		wait := min(10*time.Millisecond<<min(attempt, 5), 200*time.Millisecond)
		select {
		case <-s.ctx.Done():
			return retried, mapErr(s.cfg, s.ctx.Err(), what)
		case <-time.After(wait):
		}
	}
}

// txn runs the transaction If(cmps).Then(then).Else(els) with doRetried: what and retried
// are doRetried's.
func (s *Store) txn(what string, cmps []clientv3.Cmp, then, els []clientv3.Op) (resp *clientv3.TxnResponse, retried bool, err error) {
	retried, err = s.doRetried(what, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
		return err
	})
	return resp, retried, err
}

// loseAnswers > 0 makes that many successful requests look failed (tests only);
// afterLost, when set, runs after each answer so lost, before the retry.
var (
	loseAnswers atomic.Int32
	errLost     = status.Error(codes.Unavailable, "answer lost (test)")
	afterLost   func()
)

func (s *Store) do(what string, f func(ctx context.Context) error) error {
	_, err := s.doRetried(what, f)
	return err
}

func grpcCode(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}

// transient: errors after which the same request may well succeed in a moment.
func transient(err error) bool {
	switch grpcCode(err) {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		return errors.Is(rpctypes.Error(err), rpctypes.ErrTooManyRequests)
	}
	return false
}

// mapErr turns a client error into a CNI error: code 11 when the cluster cannot answer
// now (or compacted what a listing reads), 7 for refused credentials or a user without
// permission on the prefix, 5 otherwise.
func mapErr(cfg Config, err error, what string) error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	eps := endpointList(cfg.Endpoints)
	ee := rpctypes.Error(err)
	switch {
	case errors.Is(err, context.DeadlineExceeded), grpcCode(err) == codes.DeadlineExceeded:
		return cnierr.New(cnierr.TryAgainLater, err.Error(),
			"etcd at %s did not answer within %s (unreachable or without quorum): cannot %s", eps, cfg.Timeout, what)
	case errors.Is(err, context.Canceled), grpcCode(err) == codes.Canceled:
		return cnierr.New(cnierr.IOFailure, err.Error(), "cannot %s: the etcd store is closed", what)
	case transient(err):
		return cnierr.New(cnierr.TryAgainLater, err.Error(), "etcd at %s is unavailable: cannot %s", eps, what)
	case errors.Is(ee, rpctypes.ErrCompacted):
		// A listing of many round trips reads them all at its first revision, which etcd
		// compacted meanwhile: the same call, run again, reads anew.
		return cnierr.New(cnierr.TryAgainLater, err.Error(), "etcd compacted the revision this call was reading at: cannot %s now; run it again", what)
	case errors.Is(ee, rpctypes.ErrAuthFailed), errors.Is(ee, rpctypes.ErrInvalidAuthToken),
		errors.Is(ee, rpctypes.ErrUserEmpty), errors.Is(ee, rpctypes.ErrUserNotFound):
		return cnierr.New(cnierr.InvalidConfig, err.Error(), "etcd at %s refused the configured credentials: cannot %s", eps, what)
	case errors.Is(ee, rpctypes.ErrPermissionDenied), grpcCode(err) == codes.PermissionDenied:
		user := "user " + cfg.Username
		if cfg.Username == "" {
			user = "the user of the client certificate " + cfg.CertFile
		}
		return cnierr.New(cnierr.InvalidConfig, err.Error(),
			"etcd at %s: %s lacks permission on the keys under %s/ (it needs read and write access to that prefix): cannot %s", eps, user, cfg.Prefix, what)
	case errors.Is(ee, rpctypes.ErrNoSpace):
		return cnierr.New(cnierr.IOFailure, err.Error(), "etcd at %s is out of space: cannot %s", eps, what)
	}
	return cnierr.New(cnierr.IOFailure, err.Error(), "etcd at %s: cannot %s", eps, what)
}

func corrupt(key string, format string, a ...any) error {
	return cnierr.New(cnierr.StoreCorrupt, key, "etcd key %s: %s", key, fmt.Sprintf(format, a...))
}

// endpointList names the endpoints in a message: all of a normal cluster's, the first few
// of a list so long that naming them all would bury the message.
func endpointList(eps []string) string {
	const most = 5
	if len(eps) <= most {
		return strings.Join(eps, ",")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(eps[:most], ","), len(eps)-most)
}
