#!/bin/sh
# The operator's command against the server of the Compose project, without
# publishing its port: runs `server admin ARGS` in a throwaway container of
# the server's own image, on the project's network, with the operator's
# credentials from .credentials/ mounted read-only (never copied into an
# image or into the server's container).
#
#   scripts/admin.sh status [--json] | close | open
#
# LOTTERY_NETWORK (default tp0_testing_net), LOTTERY_SERVER (default
# server:12345) and CREDENTIALS (default .credentials) say otherwise.
set -eu

[ "$#" -ge 1 ] || {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
network=${LOTTERY_NETWORK:-tp0_testing_net}
server=${LOTTERY_SERVER:-server:12345}
credentials=$(cd "${CREDENTIALS:-.credentials}" && pwd)
for file in ca.pem operator.pem operator.key; do
    [ -f "$credentials/$file" ] || {
        echo "$0: no $credentials/$file (scripts/credentials.sh makes it)" >&2
        exit 1
    }
done
exec docker run --rm --network "$network" \
    -v "$credentials/ca.pem:/run/secrets/ca.pem:ro" \
    -v "$credentials/operator.pem:/run/secrets/operator.pem:ro" \
    -v "$credentials/operator.key:/run/secrets/operator.key:ro" \
    -e SERVER_TLS_CA=/run/secrets/ca.pem \
    -e SERVER_ADMIN_CERT=/run/secrets/operator.pem \
    -e SERVER_ADMIN_KEY=/run/secrets/operator.key \
    --entrypoint /server server:latest admin --address "$server" "$@"
