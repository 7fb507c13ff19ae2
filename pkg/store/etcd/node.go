package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/local-ipam/local-ipam/pkg/cnierr"
)

// A node name is bound to one machine. GC frees the node's reservations that its runtime
// does not know, and freeOnReboot frees them all when the boot ID changes: both are right
// only if every reservation tagged with the node was made by the machine acting. Two
// machines given one node name (a copied config, cloned hosts with one host name) would
// free each other's live reservations, and the freed addresses would be handed out
// again. So the node's record (boot/<node>) names the machine that uses the node (its
// machine ID, machine-id(5)); the first reservation, GC or freeOnReboot of the node
// writes it, and from then on a call of another machine that would reserve, GC or free on
// reboot for the node is refused with code 7. A reboot keeps the machine ID: it still
// frees. `local-ipam release --conf F --node NAME` frees the node's reservations and
// deletes the record: the name is free for a new machine.
//
// A machine whose ID cannot be read cannot prove which machine it is: its ADD, GC and
// freeOnReboot calls fail with code 7 saying so (DEL, CHECK and the operator's commands
// do not need it).

// nodeRecord is the value of boot/<node>, as JSON. Earlier versions wrote the plain boot
// ID (a UUID, as the kernel gives it): such a record is unbound, with that boot ID. Any
// other value is damage (code 104): read as a boot ID, it would leave the node unbound,
// and another machine could bind it and free the node's live reservations.
type nodeRecord struct {
	Machine string `json:"machine"`
	Boot    string `json:"boot,omitempty"` // the boot ID freeOnReboot last saw
}

// nodeState is the node record as this Store last read or wrote it.
type nodeState struct {
	rec    nodeRecord
	rev    int64 // the key's ModRevision; 0 when absent
	readAt int64 // the revision it was read at
	err    error // the record cannot be read (code 104)
}

// machineIDEnv names a file to read the machine ID from instead of the system's (tests
// simulate machines with it).
const machineIDEnv = "LOCAL_IPAM_MACHINE_ID_FILE"

// MachineIDFiles are the files the machine ID is read from, first readable one first:
// systemd's, then D-Bus's (machine-id(5)).
func MachineIDFiles() []string {
	if f := os.Getenv(machineIDEnv); f != "" {
		return []string{f}
	}
	return []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}
}

// MachineID reads this machine's ID: 32 hexadecimal digits from the first of
// MachineIDFiles that holds one. The error says what each file held.
func MachineID() (string, error) {
	var why []string
	for _, f := range MachineIDFiles() {
		b, err := os.ReadFile(f)
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		id := strings.ToLower(strings.TrimSpace(string(b)))
		if validMachineID(id) {
			return id, nil
		}
		if len(id) > 40 {
			id = id[:40] + "..."
		}
		why = append(why, fmt.Sprintf("%s holds %q, not a machine ID (32 hexadecimal digits)", f, id))
	}
	return "", errors.New(strings.Join(why, "; "))
}

func validMachineID(id string) bool {
	if len(id) != 32 || strings.Trim(id, "0") == "" {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// setNode keeps the node record read in kv (nil: absent) at revision readAt.
func (s *Store) setNode(kv *mvccpb.KeyValue, readAt int64) {
	s.node = nodeState{readAt: readAt}
	if kv == nil {
		return
	}
	s.node.rev = kv.ModRevision
	if v := strings.TrimSuffix(string(kv.Value), "\n"); kernelBootID(v) {
		s.node.rec.Boot = v // the plain boot ID of earlier versions: not bound yet
		return
	}
	if err := json.Unmarshal(kv.Value, &s.node.rec); err != nil || !validMachineID(s.node.rec.Machine) {
		s.node.rec = nodeRecord{}
		s.node.err = corrupt(string(kv.Key), "not a node record of local-ipam; 'local-ipam release --conf FILE --node %s' removes it with the node's reservations", s.cfg.Node)
	}
}

// kernelBootID tells whether v is a boot ID as /proc/sys/kernel/random/boot_id gives it:
// a UUID in lower-case hexadecimal, 8-4-4-4-12 digits.
func kernelBootID(v string) bool {
	if len(v) != 36 {
		return false
	}
	for i, c := range v {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// machine returns this machine's ID: Config.Machine, else read from MachineIDFiles.
func (s *Store) machine() (string, error) {
	if s.cfg.Machine != "" {
		return s.cfg.Machine, nil
	}
	id, err := MachineID()
	if err != nil {
		return "", cnierr.New(cnierr.InvalidConfig, err.Error(),
			"node %s of network %s: this machine's ID cannot be read from %s; local-ipam-etcd binds each node name to one machine and cannot reserve, garbage-collect or free on reboot for the node without it (systemd-machine-id-setup creates one)",
			s.cfg.Node, s.network, strings.Join(MachineIDFiles(), " or "))
	}
	s.cfg.Machine = id
	return id, nil
}

// ownNode returns this machine's ID if the node may be used by it: the node is bound to
// it, or to no machine yet.
func (s *Store) ownNode() (string, error) {
	m, err := s.machine()
	if err != nil {
		return "", err
	}
	if s.node.err != nil {
		return "", s.node.err
	}
	if b := s.node.rec.Machine; b != "" && b != m {
		return "", cnierr.New(cnierr.InvalidConfig, "",
			"node name %q of network %s is bound to another machine (machine ID %s; this one is %s): two machines use one store.node. Give each machine a unique store.node; if machine %s is gone for good, run 'local-ipam release --conf FILE --node %s' (it frees the node's addresses and its binding)",
			s.cfg.Node, s.network, b, m, b, s.cfg.Node)
	}
	return m, nil
}

// writeNode replaces the node record with rec if it is still the one this Store read;
// otherwise it reads the current one and returns false.
func (s *Store) writeNode(rec nodeRecord) (bool, error) {
	val, err := json.Marshal(rec)
	if err != nil {
		return false, cnierr.IO(err, "cannot encode %s", s.bootKey())
	}
	var resp *clientv3.TxnResponse
	err = s.do("write "+s.bootKey(), func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.bootKey()), "=", s.node.rev)).
			Then(clientv3.OpPut(s.bootKey(), string(val))).Else(clientv3.OpGet(s.bootKey())).Commit()
		return err
	})
	if err != nil {
		return false, err
	}
	if !resp.Succeeded {
		s.setNode(firstKV(resp, 0), resp.Header.Revision)
		return false, nil
	}
	s.node = nodeState{rec: rec, rev: resp.Header.Revision, readAt: resp.Header.Revision}
	return true, nil
}

// maxNodeTries bounds the rewrites of a node record that others keep changing under us
// (only this machine's own concurrent calls may, once it is bound).
const maxNodeTries = 20

// claimNode binds the node to this machine if it is bound to none, and fails if it is
// bound to another: before GC, which acts on everything tagged with the node. It tells
// whether the node was this machine's already: a node just bound may hold reservations
// of another machine that used the same name before it was bound (an earlier version's
// record, or none), so nothing of it may be freed on this call's word.
func (s *Store) claimNode() (bool, error) {
	for range maxNodeTries {
		m, err := s.ownNode()
		if err != nil {
			return false, err
		}
		if s.node.rec.Machine == m {
			return true, nil
		}
		rec := s.node.rec
		rec.Machine = m
		if ok, err := s.writeNode(rec); err != nil || ok {
			return false, err
		}
	}
	return false, cnierr.New(cnierr.TryAgainLater, "", "gave up binding node %s: %s keeps changing", s.cfg.Node, s.bootKey())
}
