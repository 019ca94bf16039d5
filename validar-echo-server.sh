#!/bin/sh
# Checks that the server echoes: from a throwaway busybox container on the
# project's network, sends one message to server:12345 and compares the
# reply with it, byte for byte. Prints exactly one result line on stdout
# (exit 0 on success, 1 otherwise); when the check cannot run at all, or
# the server answers wrong, one line on stderr says why.
#
# The probe itself takes at most 5 s. On an engine without the busybox
# image, the image is made first from the host's static busybox
# (scripts/busybox-image.sh; once, a few seconds more), never pulled.
#
# The message is an Echo frame of our protocol (length, version, kind 4,
# text); any plain TCP echo server returns it unchanged as well.
set -eu

NETWORK=${NETWORK:-tp0_testing_net}
IMAGE=${BUSYBOX_IMAGE:-busybox:latest}
case "$0" in */*) here=${0%/*} ;; *) here=. ;; esac

if [ "$#" -ne 0 ]; then
    echo "usage: sh $0    (NETWORK and BUSYBOX_IMAGE may be set in the environment)" >&2
    exit 2
fi

fail() {
    echo "validar-echo-server: $1" >&2
    echo "action: test_echo_server | result: fail"
    exit 1
}

command -v docker >/dev/null 2>&1 || fail "cannot probe: docker is not installed"
docker info >/dev/null 2>&1 ||
    fail "cannot probe: the Docker engine does not answer (is it running, and may this user use it?)"
docker network inspect "$NETWORK" >/dev/null 2>&1 ||
    fail "cannot probe: there is no network $NETWORK (start the system first: make docker-compose-up)"
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    # The reason, if any, is already on stderr.
    sh "$here/scripts/busybox-image.sh" "$IMAGE" ||
        fail "cannot probe: no image $IMAGE, and it could not be made (see above)"
fi

# Runs inside the container; prints what it found.
probe='
frame() { printf "\000\000\000\044\003\004validar-echo-server: hola, Loteria"; }
sent=$(frame | od -An -tx1 | tr -d " \n")
got=$(frame | timeout 3 nc server 12345 | od -An -tx1 | tr -d " \n") || true
if [ -z "$got" ]; then echo no-reply
elif [ "$got" = "$sent" ]; then echo success
else echo altered; fi
'

errors=$(mktemp)
trap 'rm -f -- "$errors"' EXIT
status=0
result=$(timeout 5 docker run --rm --network "$NETWORK" "$IMAGE" sh -c "$probe" 2>"$errors") || status=$?

case "$result" in
success)
    echo "action: test_echo_server | result: success"
    exit 0
    ;;
altered) fail "server:12345 answered, but not with the bytes it was sent" ;;
no-reply) fail "server:12345 did not answer within 3 s (is a server named server on $NETWORK?)" ;;
esac
if [ "$status" -eq 124 ]; then
    fail "no result within 5 s (the engine was too slow to start the probe, or the server held the connection)"
fi
fail "cannot probe: docker run failed: $(head -n 1 "$errors")"
