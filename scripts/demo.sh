#!/usr/bin/env bash
# make demo: allocate and release addresses for a few containers in a temporary data dir,
# exactly as a container runtime would call the plugin. No root needed.
set -euo pipefail
bin=${1:?usage: demo.sh path/to/local-ipam}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

conf=$work/demo.conf
cat >"$conf" <<JSON
{
  "cniVersion": "1.1.0",
  "name": "demo",
  "type": "bridge",
  "ipam": {
    "type": "local-ipam",
    "dataDir": "$work/networks",
    "ranges": [
      [{ "subnet": "10.22.0.0/29" }],
      [{ "subnet": "fd00:22::/64", "rangeStart": "fd00:22::10" }]
    ],
    "exclude": ["10.22.0.3"],
    "routes": [{ "dst": "0.0.0.0/0" }]
  }
}
JSON

# Bold commands on a terminal only, and never when NO_COLOR is set (https://no-color.org).
bold='' plain=''
if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
	bold=$'\033[1m' plain=$'\033[0m'
fi
say() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }
cni() { # cni VERB CONTAINER: call the plugin as a runtime does
	CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/var/run/netns/$2 CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin \
		"$bin" <"$conf"
}
addr() { grep -o '"address": "[^"]*"' | cut -d'"' -f4 | paste -sd' '; }

echo "local-ipam demo: network 'demo', IPv4 10.22.0.0/29 (gateway .1, .3 excluded) + IPv6, data in $work/networks"
for c in alpha bravo charlie; do
	say "CNI_COMMAND=ADD CNI_CONTAINERID=$c local-ipam < demo.conf"
	cni ADD "$c" | addr
done
say "CNI_COMMAND=ADD CNI_CONTAINERID=alpha local-ipam < demo.conf    # a second ADD without DEL"
cni ADD alpha || true
say "local-ipam list --data-dir $work/networks"
"$bin" list --data-dir "$work/networks"
say "CNI_COMMAND=DEL CNI_CONTAINERID=bravo local-ipam < demo.conf"
cni DEL bravo && echo "(released)"
say "CNI_COMMAND=ADD CNI_CONTAINERID=delta local-ipam < demo.conf      # round-robin: bravo's address is not reused yet"
cni ADD delta | addr
say "CNI_COMMAND=ADD CNI_CONTAINERID=echo local-ipam < demo.conf       # the walk wraps round to bravo's old address"
cni ADD echo | addr
say "CNI_COMMAND=ADD CNI_CONTAINERID=foxtrot local-ipam < demo.conf    # the IPv4 set is full: code 100"
cni ADD foxtrot || true
say "CNI_COMMAND=STATUS local-ipam < demo.conf"
cni STATUS - || true
say "local-ipam usage --conf demo.conf"
"$bin" usage --conf "$conf"
say "CNI_COMMAND=GC local-ipam < demo.conf + {\"cni.dev/valid-attachments\": [alpha, delta]}"
gc_conf=$(sed 's/"name": "demo",/"name": "demo", "cni.dev\/valid-attachments": [{"containerID":"alpha","ifname":"eth0"},{"containerID":"delta","ifname":"eth0"}],/' "$conf")
CNI_COMMAND=GC CNI_PATH=/opt/cni/bin "$bin" <<<"$gc_conf" && echo "(charlie's and echo's stale addresses released)"
say "local-ipam release --network demo --container alpha --data-dir $work/networks"
"$bin" release --network demo --container alpha --data-dir "$work/networks"
say "local-ipam list --data-dir $work/networks"
"$bin" list --data-dir "$work/networks"
say "CNI_COMMAND=DEL CNI_CONTAINERID=delta local-ipam < demo.conf; CNI_COMMAND=DEL ... (again: DEL is idempotent)"
cni DEL delta && cni DEL delta && echo "(released twice, no error)"
echo
echo "On disk, host-local's format (so either plugin can take over the other's directory):"
ls -A "$work/networks/demo"
