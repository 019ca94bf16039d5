#!/bin/bash
# The lottery on Docker Swarm, on this engine's node:
#   scripts/swarm.sh up [CLIENTS]   write stack.yaml, init a single-node swarm
#                                   if the engine is in none, label this node
#                                   for the server's storage if no node is,
#                                   and deploy
#   scripts/swarm.sh logs           every service's log
#   scripts/swarm.sh down           remove the stack, its secrets, configs and
#                                   volume; leave the swarm if `up` made it
#                                   and no other stack is left in it
# STACK names the stack (default lottery). Run it in the folder that holds
# server/config.ini, client/config.yaml and .data/agency-K.csv (the
# repository).
set -eu

stack=${STACK:-lottery}
case "$stack" in
    '' | *[!a-zA-Z0-9_-]*) echo "$0: STACK must be letters, digits, - and _, not '$stack'" >&2; exit 2 ;;
esac
# Which swarm `up` made is recorded in the swarm itself, as a label of its
# node: it goes with the swarm, whoever leaves it.
made_label=lottery.swarm-made-by-script

state() { docker info --format '{{.Swarm.LocalNodeState}}'; }
self() { docker info --format '{{.Swarm.NodeID}}'; }

up() {
    local clients=${1:-5} k
    for ((k = 1; k <= clients; k++)); do
        [ -f ".data/agency-$k.csv" ] || {
            echo "$0: no .data/agency-$k.csv: agency $k would never start (make sample-data)" >&2
            exit 1
        }
    done
    # The stack file first: nothing is started if it cannot be written.
    bash "$(dirname -- "$0")/generar-stack.sh" stack.yaml "$clients"
    if [ "$(state)" != active ]; then
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null
        docker node update --label-add "$made_label=true" "$(self)" >/dev/null
        echo "swarm: initialised on this node (swarm down leaves it)"
    fi
    if [ -z "$(docker node ls -q --filter node.label=lottery.storage=true)" ]; then
        docker node update --label-add lottery.storage=true "$(self)" >/dev/null
    fi
    docker stack deploy --resolve-image never -c stack.yaml "$stack"
}

logs() {
    local service
    for service in $(docker stack services --format '{{.Name}}' "$stack" | sort -V); do
        echo "== $service"
        docker service logs --raw "$service" 2>&1
    done
}

down() {
    if [ "$(state)" = active ] && docker stack ls --format '{{.Name}}' | grep -qx -- "$stack"; then
        docker stack rm "$stack"
    fi
    # The volume can go once the stack's containers are gone.
    local i
    for i in $(seq 1 120); do
        [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")" ] && break
        sleep 0.5
    done
    if docker volume inspect "${stack}_round" >/dev/null 2>&1; then
        docker volume rm "${stack}_round" >/dev/null || {
            echo "$0: the volume ${stack}_round is still in use" >&2
            exit 1
        }
    fi
    if [ "$(state)" = active ] \
        && [ "$(docker node inspect self --format "{{index .Spec.Labels \"$made_label\"}}")" = true ] \
        && [ -z "$(docker stack ls --format '{{.Name}}')" ]; then
        docker swarm leave --force >/dev/null
        echo "swarm: left"
    fi
    echo "stack $stack: removed"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    logs) logs ;;
    down) down ;;
    *) echo "usage: $0 up [CLIENTS] | logs | down" >&2; exit 2 ;;
esac
