"""The node's pod network as CNI configures it: the bridge plugin on the project's bridge
(made by `podnet.ensure_bridge`, which also holds the gateway address and the iptables
guards), host-local addresses from the pod CIDR, a default route via the gateway.

`isGateway: false`: the plugin leaves the bridge's address and the machine's global
`net.ipv4.ip_forward` alone (podnet switches forwarding on for the bridge only); no IP
masquerade (pod traffic never leaves the machine).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from modelship_cluster import podnet

NETWORK_NAME = "modelship"


def conflist(ipam_dir: Path, net: podnet.PodNetConfig = podnet.DEFAULT) -> str:
    """The CNI network configuration list (pure)."""
    network = net.pod_network
    hosts = list(network.hosts())
    # Addresses below .1.0 stay free for what the host itself places on the bridge.
    start = ipaddress.IPv4Address(int(network.network_address) + 256)
    doc = {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": False,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "promiscMode": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [
                        [
                            {
                                "subnet": str(network),
                                "rangeStart": str(start),
                                "rangeEnd": str(hosts[-1]),
                                "gateway": net.gateway,
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0", "gw": net.gateway}],
                },
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def write(conf_dir: Path, ipam_dir: Path, net: podnet.PodNetConfig = podnet.DEFAULT) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / "10-modelship.conflist"
    path.write_text(conflist(ipam_dir, net))
    return path
