#!/usr/bin/env bash
# Builds the fjord image (deploy/container/build.sh) and runs a 3-node cluster from it with
# podman on a network of its own, waits until the cluster is ready, creates a topic,
# produces one record and consumes it with the `fjord` CLI (run from the same image on the
# same network), then removes the containers, their volumes and the network.
#
#   deploy/run-podman.sh
#
# Environment:
#   SKIP_BUILD=1      use the image as it is (FJORD_IMAGE, default localhost/fjord:dev)
#   PODMAN_RUNTIME    an OCI runtime for podman (--runtime): e.g. runc where crun refuses a
#                     host in cgroup hybrid mode ("cgroups in hybrid mode not supported")
#   RUN_OPTS          extra `podman run` options; default: ulimits below the host's own
#                     (some sandboxes refuse a container the host's nofile/nproc limits)
#   READY_SECS        how long to wait for the cluster (default 90)
#
# Exit status 0 only if the record consumed is the one produced.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
image=${FJORD_IMAGE:-localhost/fjord:dev}
podman=(podman)
[ -n "${PODMAN_RUNTIME:-}" ] && podman+=(--runtime "$PODMAN_RUNTIME")
read -r -a run_opts <<< "${RUN_OPTS:---ulimit nofile=16384:16384 --ulimit nproc=4096:4096}"
ready_secs=${READY_SECS:-90}
tag=fjord-demo-$$
net=$tag-net

teardown() {
  for i in 1 2 3; do "${podman[@]}" rm -f -t 10 "$tag-$i" >/dev/null 2>&1 || true; done
  for i in 1 2 3; do "${podman[@]}" volume rm -f "$tag-data-$i" >/dev/null 2>&1 || true; done
  "${podman[@]}" network rm -f "$net" >/dev/null 2>&1 || true
}
trap teardown EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  FJORD_IMAGE=$image CONTAINER_TOOL=podman "$here/container/build.sh"
fi

# The CLI, from the image, on the cluster's network.
fjord() {
  "${podman[@]}" run --rm -i "${run_opts[@]}" --network "$net" --entrypoint /usr/local/bin/fjord \
    "$image" --brokers "$tag-1:7101,$tag-2:7101,$tag-3:7101" "$@"
}

# Node-to-node traffic goes to the peer port (7201) where the binary has --peer-listen;
# a binary without it serves peers on the client port.
peer_port=7101
if "${podman[@]}" run --rm "${run_opts[@]}" "$image" --help | grep -q -- '--peer-listen'; then
  peer_port=7201
fi
peers="1=$tag-1:$peer_port,2=$tag-2:$peer_port,3=$tag-3:$peer_port"
echo "peers: $peers"

"${podman[@]}" network create "$net" >/dev/null
for i in 1 2 3; do
  "${podman[@]}" run -d "${run_opts[@]}" --name "$tag-$i" --network "$net" \
    -v "$tag-data-$i:/var/lib/fjord" \
    -e FJORD_ID="$i" -e FJORD_PEERS="$peers" -e FJORD_ADVERTISE="$tag-$i:7101" \
    "$image" >/dev/null
  echo "started $tag-$i"
done

# Ready: every node registered and a metadata leader, as node 1 reports it.
deadline=$((SECONDS + ready_secs))
until status=$(fjord --format json cluster status 2>/dev/null) \
  && [ "$(grep -o '"address"' <<< "$status" | wc -l)" -ge 3 ] \
  && grep -q '"metadata_leader":[0-9]' <<< "$status"; do
  if [ $SECONDS -ge $deadline ]; then
    echo "cluster not ready after ${ready_secs}s; node logs:" >&2
    for i in 1 2 3; do "${podman[@]}" logs --tail 20 "$tag-$i" >&2 || true; done
    exit 1
  fi
  sleep 1
done
echo "ready after $((SECONDS + ready_secs - deadline))s: $status"

fjord topic create demo --partitions 3 --replication 3
record="hello from podman $$"
echo "$record" | fjord produce demo
got=$(fjord consume demo --from-beginning --count 1)
echo "consumed: $got"
if [ "$got" != "$record" ]; then
  echo "expected: $record" >&2
  exit 1
fi
echo "run-podman: OK (3 nodes from $image; produced and consumed one record)"
