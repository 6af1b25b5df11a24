#!/bin/bash
# two namespaces joined by a veth: wsrv 10.77.0.1 <-> wcli 10.77.0.2
set -e
ip netns del wsrv 2>/dev/null || true; ip netns del wcli 2>/dev/null || true
ip netns add wsrv; ip netns add wcli
ip link add wv0 netns wsrv type veth peer name wv1 netns wcli
ip -n wsrv addr add 10.77.0.1/24 dev wv0; ip -n wcli addr add 10.77.0.2/24 dev wv1
for n in wsrv wcli; do ip -n $n link set lo up; done
ip -n wsrv link set wv0 up; ip -n wcli link set wv1 up
