#!/bin/bash
# The lottery on Docker Swarm, on this engine's node:
#   scripts/swarm.sh up [CLIENTS]   init a single-node swarm if there is none,
#                                   label this node for the server's storage,
#                                   write stack.yaml and deploy it
#   scripts/swarm.sh logs           every service's log
#   scripts/swarm.sh down           remove the stack, its secrets, configs and
#                                   volume; leave the swarm if `up` made it
# STACK names the stack (default lottery). Run it in the folder that holds
# server/config.ini, client/config.yaml and .data/ (the repository).
set -eu

stack=${STACK:-lottery}
made_swarm=".swarm-made-by-$stack"

state() { docker info --format '{{.Swarm.LocalNodeState}}'; }

up() {
    local clients=${1:-5}
    if [ "$(state)" != active ]; then
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null
        touch "$made_swarm"
        echo "swarm: initialised on this node (swarm down leaves it)"
    fi
    docker node update --label-add lottery.storage=true "$(docker info --format '{{.Swarm.NodeID}}')" >/dev/null
    bash "$(dirname -- "$0")/generar-stack.sh" stack.yaml "$clients"
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
    docker stack rm "$stack" >/dev/null 2>&1 || true
    # The volume can go once the stack's containers are gone.
    local i
    for i in $(seq 1 60); do
        [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")" ] && break
        sleep 0.5
    done
    docker volume rm -f "${stack}_round" >/dev/null 2>&1 || true
    if [ -e "$made_swarm" ]; then
        docker swarm leave --force >/dev/null
        rm -f "$made_swarm"
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
