// Package metrics writes the usage report (internal/usage) in the Prometheus text format,
// for node_exporter's textfile collector (docs/MONITORING.md). It is the whole of
// local-ipam-metrics, kept out of local-ipam: the Prometheus libraries would slow the
// start-up of every call of the plugin.
package metrics

import (
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/local-ipam/local-ipam/internal/usage"
)

// setLabels name a range set: its network, its index in the config, its ranges
// ("start-end,start-end") and its family ("ipv4" or "ipv6").
var setLabels = []string{"network", "range_set", "ranges", "family"}

// Write writes rep's metrics to w. Counts are float64 gauges: exact up to 2^53, rounded
// to the nearest float64 above (the JSON report has them exactly).
func Write(w io.Writer, rep usage.Report) error {
	reg := prometheus.NewPedanticRegistry()
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "local_ipam", Name: name, Help: help}, labels)
		reg.MustRegister(g)
		return g
	}
	size := gauge("range_set_size", "Addresses the range set can hand out: those of its ranges, gateways excepted.", setLabels...)
	inUse := gauge("range_set_in_use", "Addresses of the range set reserved (an excluded address that is reserved counts here).", setLabels...)
	excluded := gauge("range_set_excluded", "Addresses of the range set that exclusions keep from being handed out and are not reserved.", setLabels...)
	free := gauge("range_set_free", "Addresses of the range set that an ADD can hand out: size less in use and excluded.", setLabels...)
	ready := gauge("network_ready", "1 if the network can serve an ADD now (STATUS's answer: its store can be written and every range set has a free address), 0 if not.", "network")
	unreadable := gauge("network_unreadable", "1 for each network config (file) whose usage could not be read.", "file", "network")
	errors := gauge("usage_errors", "Number of network configs whose usage could not be read.")

	for _, n := range rep.Networks {
		b := 0.0
		if n.Ready {
			b = 1
		}
		ready.WithLabelValues(n.Network).Set(b)
		for _, s := range n.Sets {
			l := []string{n.Network, fmt.Sprint(s.Set), s.Ranges, s.Family}
			size.WithLabelValues(l...).Set(s.Size.Float64())
			inUse.WithLabelValues(l...).Set(s.InUse.Float64())
			excluded.WithLabelValues(l...).Set(s.Excluded.Float64())
			free.WithLabelValues(l...).Set(s.Free.Float64())
		}
	}
	for _, f := range rep.Errors {
		unreadable.WithLabelValues(f.File, f.Network).Set(1)
	}
	errors.WithLabelValues().Set(float64(len(rep.Errors)))

	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}
