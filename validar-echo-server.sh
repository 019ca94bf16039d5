#!/bin/sh
# Checks that the server echoes: from a throwaway busybox container on the
# project's network, sends one message to server:12345 and compares the
# reply with it, byte for byte. Prints one result line; exit 0 on success.
#
# The message is an Echo frame of our protocol (length, version 1, kind 4,
# text); any plain TCP echo server returns it unchanged as well.
set -eu

NETWORK=${NETWORK:-tp0_testing_net}
IMAGE=${BUSYBOX_IMAGE:-busybox:latest}

if [ "$#" -ne 0 ]; then
    echo "usage: sh $0    (NETWORK and BUSYBOX_IMAGE may be set in the environment)" >&2
    exit 2
fi

# Runs inside the container; prints "success" or "fail".
probe='
frame() { printf "\000\000\000\044\001\004validar-echo-server: hola, Loteria"; }
sent=$(frame | od -An -tx1 | tr -d " \n")
got=$(frame | timeout 3 nc server 12345 | od -An -tx1 | tr -d " \n") || true
if [ -n "$got" ] && [ "$got" = "$sent" ]; then echo success; else echo fail; fi
'

result=$(timeout 5 docker run --rm --network "$NETWORK" "$IMAGE" sh -c "$probe" 2>/dev/null) || result=fail

if [ "$result" = success ]; then
    echo "action: test_echo_server | result: success"
    exit 0
fi
echo "action: test_echo_server | result: fail"
exit 1
