#!/usr/bin/env bash
# The worker container is one local GPU node. It registers itself, then runs side by side:
#   - one `manage.py worker` per GPU slot (TALKFORGE_WORKERS, default: one per GPU nvidia-smi lists,
#     or one for a CPU-only container);
#   - `manage.py housekeeping`, which must run on the node's own machine: it probes this container's
#     GPUs and stops the process groups of jobs whose worker died, and both exist only in here.
# If any of them ends, the others are stopped and the container exits, so Docker restarts it whole.
set -euo pipefail

NODE_NAME=${TALKFORGE_NODE_NAME:-docker}
NODE_WORKDIR=${TALKFORGE_NODE_WORKDIR:-/data/nodes/$NODE_NAME}
WORKERS=${TALKFORGE_WORKERS:-}
if [[ -z $WORKERS ]]; then
  WORKERS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  ((WORKERS >= 1)) || WORKERS=1
fi

python manage.py register_local_node --name "$NODE_NAME" --workdir "$NODE_WORKDIR"

pids=()
stopping=0
trap 'stopping=1; kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT

python manage.py housekeeping &
pids+=("$!")
for ((i = 0; i < WORKERS; i++)); do
  python manage.py worker --node "$NODE_NAME" &
  pids+=("$!")
done
echo "node $NODE_NAME: $WORKERS worker(s) and housekeeping running"

wait -n || true
if ((!stopping)); then
  echo "a process of node $NODE_NAME ended; stopping the others" >&2
  kill -TERM "${pids[@]}" 2>/dev/null || true
fi
# A worker finishes its running job before it stops (give the container a long stop_grace_period).
wait || true
((stopping)) || exit 1
