package plugin

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/local-ipam/local-ipam/pkg/config"
	"github.com/local-ipam/local-ipam/pkg/store/disk"
)

// Block is one node-affine block of an etcd network, as `local-ipam blocks` shows it.
type Block struct {
	CIDR  string `json:"cidr"`
	Node  string `json:"node"` // "" when no machine holds it (it holds requested or left-over addresses)
	InUse int    `json:"inUse"`
	Size  int    `json:"size"`
}

// BlockLister is a Network divided into node-affine blocks (the etcd store).
type BlockLister interface {
	// ListBlocks returns the block size (0: the network has no blocks) and every block
	// that is held or holds a reservation, in address order.
	ListBlocks() (int, []Block, error)
}

type netBlocks struct {
	Network   string  `json:"network"`
	BlockSize int     `json:"blockSize"`
	Blocks    []Block `json:"blocks"`
}

// cmdBlocks lists the blocks of an etcd network: which machine holds each and how much of
// it is in use (for an operator, or a routing daemon programming per-node routes).
func (p *Plugin) cmdBlocks(args []string, stdout io.Writer) error {
	fs, asJSON, err := parseConfCommand("blocks", args)
	if err != nil {
		return err
	}
	c, err := p.loadConf(fs)
	if err != nil {
		return err
	}
	if c.Store.Type != config.StoreEtcd {
		return errUsage{"blocks: blocks are for networks kept in etcd"}
	}
	st, err := p.openNetwork(c, OperatorRead, disk.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	bl, ok := st.(BlockLister)
	if !ok {
		return fmt.Errorf("network %s: this store has no blocks", c.Name)
	}
	size, blocks, err := bl.ListBlocks()
	if err != nil {
		return err
	}
	out := netBlocks{Network: c.Name, BlockSize: size, Blocks: blocks}
	if out.Blocks == nil {
		out.Blocks = []Block{}
	}
	if asJSON {
		return writeJSON(stdout, out)
	}
	if size == 0 {
		fmt.Fprintf(stdout, "network %s has no blocks (store.blockSize 0)\n", c.Name)
		return nil
	}
	fmt.Fprintf(stdout, "network %s, blocks of %d addresses\n", c.Name, size)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CIDR\tNODE\tIN USE\tSIZE")
	for _, b := range blocks {
		node := b.Node
		if node == "" {
			node = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", b.CIDR, node, b.InUse, b.Size)
	}
	return tw.Flush()
}
