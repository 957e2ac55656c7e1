#!/usr/bin/env bash
# End-to-end check of compose's cluster profile, on a machine with Docker (Compose v2) and access
# to an image registry: start the stack with three Qdrant nodes behind HAProxy, ingest a document
# through the API with the service token, kill one Qdrant node, check that searches still answer
# (not degraded), start the node again and check that it rejoins the cluster with its shards.
#
# It cannot run without a container engine and a registry to pull the images from, so the tests
# do not run it (tests/test_deploy.py only checks its syntax with `bash -n`).
#
#   cp .env.example .env   # and replace every replace-me value
#   deploy/smoke.sh        # from the repository root; the stack is left running (docker compose down)
#
# Every wait is bounded (SMOKE_TIMEOUT seconds each, default 900: the first start pulls images and
# the Ollama models). Exits non-zero, saying what failed, at the first check that does not hold.
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEOUT="${SMOKE_TIMEOUT:-900}"
COLLECTION="smoke-$(date +%s)"
NODE=qdrant-node3  # any one of three: the other two are a Raft majority and hold a copy of each shard

fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
say() { echo "smoke: $*"; }

command -v docker >/dev/null || fail "docker is not installed"
docker compose version >/dev/null 2>&1 || fail "Docker Compose v2 (docker compose) is needed"
[[ -f .env ]] || fail "no .env: cp .env.example .env, then replace every replace-me value"
! grep -q 'replace-me' .env || fail ".env still has replace-me values"

# The cluster's settings, over .env's (the shell's environment wins in compose's interpolation).
export QDRANT_URL=http://qdrant-lb:6333 RAGKIT_QDRANT_SHARDS=3 RAGKIT_QDRANT_REPLICATION=2 \
    RAGKIT_QDRANT_WRITE_CONSISTENCY=1
compose() { docker compose --profile cluster "$@"; }

# Python in the api container: it has httpx, reaches every node by name, and holds the secrets in
# its environment, so no token or key appears on this machine's command lines.
in_api() { compose exec -T api python - "$@"; }

wait_for() {  # wait_for <what> <command...>: retry the command until it succeeds or TIMEOUT passes
    local what="$1" deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "waited ${TIMEOUT} s for ${what}"
        sleep 3
    done
    say "${what}: ok"
}

healthy() {  # healthy <service>: every container of the service reports healthy
    local ids statuses
    ids="$(compose ps -q "$1")" && [[ -n "$ids" ]] || return 1
    # shellcheck disable=SC2086 # one id per word
    statuses="$(docker inspect -f '{{.State.Health.Status}}' $ids)" || return 1
    ! grep -qv '^healthy$' <<<"$statuses"
}

node_ready() {  # node_ready <node>: its /readyz answers 200 (joined consensus, shards ready)
    in_api "$1" <<'EOF'
import sys, httpx
sys.exit(httpx.get(f"http://{sys.argv[1]}:6333/readyz", timeout=3).status_code != 200)
EOF
}

node_down() { ! node_ready "$1"; }

api_ready() {
    in_api <<'EOF'
import sys, httpx
sys.exit(httpx.get("http://127.0.0.1:8000/health/ready", timeout=5).status_code != 200)
EOF
}

search_answers() {  # 20 searches through HAProxy, each answered from the store (not degraded, not empty)
    in_api "$COLLECTION" <<'EOF'
import os, sys, httpx
headers = {"X-Service-Token": os.environ["INTER_SERVICE_SECRET"].split(",")[0]}
for _ in range(20):
    r = httpx.post("http://127.0.0.1:8000/api/v1/rag/search", headers=headers, timeout=15,
                   json={"query": "what happens when a node is lost", "collection": sys.argv[1]})
    body = r.json() if r.status_code == 200 else {}
    if r.status_code != 200 or body.get("degraded") or not body.get("results"):
        sys.exit(f"search answered {r.status_code}: {r.text[:300]}")
EOF
}

rejoined() {  # the node sees three peers and holds its shard copies, all active
    in_api "$NODE" "$COLLECTION" <<'EOF'
import os, sys, httpx
node, collection = sys.argv[1], sys.argv[2]
headers = {"api-key": os.environ["QDRANT_API_KEY"]}
cluster = httpx.get(f"http://{node}:6333/cluster", headers=headers, timeout=5).json()["result"]
shards = httpx.get(f"http://{node}:6333/collections/{collection}/cluster", headers=headers, timeout=5).json()["result"]
local = shards["local_shards"]
ok = cluster["status"] == "enabled" and len(cluster["peers"]) == 3 and local and all(s["state"] == "Active" for s in local)
sys.exit(0 if ok else f"not yet: {len(cluster['peers'])} peers, local shards {local}")
EOF
}

say "starting the stack with the cluster profile"
compose up -d --build
for service in qdrant-node1 qdrant-node2 qdrant-node3 qdrant-lb api; do
    wait_for "${service} healthy" healthy "$service"
done
wait_for "api ready (/health/ready)" api_ready

say "ingesting a document into ${COLLECTION} through the API"
in_api "$COLLECTION" <<'EOF'
import os, sys, httpx
collection = sys.argv[1]
headers = {"X-Service-Token": os.environ["INTER_SERVICE_SECRET"].split(",")[0]}
api = httpx.Client(base_url="http://127.0.0.1:8000/api/v1/rag", headers=headers, timeout=60)
r = api.post("/collections", json={"name": collection})
assert r.status_code == 201, r.text
doc = {"id": "failover", "title": "Failover",
       "text": "When a node is lost, each shard is still served by its other copy on a live node."}
r = api.post(f"/collections/{collection}/documents", json={"documents": [doc]})
assert r.status_code == 200 and r.json()["ingested"] == 1, r.text
# The collection got the cluster's layout from RAGKIT_QDRANT_*.
info = httpx.get(f"http://qdrant-lb:6333/collections/{collection}",
                 headers={"api-key": os.environ["QDRANT_API_KEY"]}, timeout=10).json()["result"]
params = info["config"]["params"]
assert (params["shard_number"], params["replication_factor"]) == (3, 2), params
EOF
wait_for "search before the failure" search_answers

say "killing ${NODE}"
compose kill "$NODE"
# HAProxy takes a node out after two failed checks 2 s apart; requests meanwhile are redispatched.
wait_for "${NODE} gone" node_down "$NODE"
search_answers || fail "search with ${NODE} down"
say "search with ${NODE} down: ok"

say "starting ${NODE} again"
compose start "$NODE"
wait_for "${NODE} healthy" healthy "$NODE"
wait_for "${NODE} rejoined, its shard copies active" rejoined
wait_for "search after the node's return" search_answers

say "all checks passed (collection ${COLLECTION} left in place; docker compose --profile cluster down to stop)"
