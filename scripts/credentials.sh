#!/bin/bash
# The credentials of the lottery's TLS, made with openssl: a certificate
# authority (CA), the server's certificate, one certificate per agency (its
# identity: CN=agency-K, for client authentication only), the operator's
# (CN=operator, for `server admin`) and the list of revoked ones (CRL).
# Nothing made here is committed or goes into an image; Compose mounts each
# container's own files as secrets.
#
#   scripts/credentials.sh DIR N [SERVER_NAMES]
#       makes whatever DIR lacks for the server, the operator and agencies
#       1..N, never replacing what exists; SERVER_NAMES are the names and
#       addresses the server's certificate is valid for (default
#       server,localhost,127.0.0.1)
#   scripts/credentials.sh DIR --revoke K
#       revokes agency K's certificate: the server refuses it from its next
#       start on (a restart resumes the round); it stays revoked, files and
#       all, until --rotate
#   scripts/credentials.sh DIR --rotate K
#       gives agency K a new key and certificate and revokes the old one
#
# DIR holds ca.pem (public), ca.key (private: only this command needs it),
# server.pem/.key, operator.pem/.key, agency-K.pem/.key, crl.pem, and the
# CA's records in ca-db/.
set -eu

usage() {
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ "$#" -ge 2 ] || usage
dir=$1
shift
case "$1" in
--revoke | --rotate)
    [ -f "$dir/ca-db/openssl.cnf" ] || {
        echo "$0: $dir holds no credentials made by this command" >&2
        exit 1
    }
    ;;
*) mkdir -p "$dir" ;;
esac
# The CA's configuration names its files by absolute path, so that it
# works from any directory.
dir=$(cd "$dir" && pwd)
command -v openssl >/dev/null 2>&1 || {
    echo "$0: needs openssl (Debian: apt-get install openssl)" >&2
    exit 1
}

# Runs openssl quietly, but shows what it said if it fails.
ossl() {
    local said
    if ! said=$(openssl "$@" 2>&1 >/dev/null); then
        echo "$0: openssl $1 failed:" >&2
        echo "$said" >&2
        exit 1
    fi
}

# A P-256 key, readable by its owner only.
new_key() {
    (umask 077 && ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1")
}

# The CA's configuration for `openssl ca`, pointing into $dir.
write_config() {
    cat >"$dir/ca-db/openssl.cnf" <<CONF
[ ca ]
default_ca = loteria

[ loteria ]
database = $dir/ca-db/index.txt
new_certs_dir = $dir/ca-db/issued
serial = $dir/ca-db/serial
crlnumber = $dir/ca-db/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_days = 825
default_crl_days = 3650
policy = by_name
unique_subject = no
copy_extensions = none
crl_extensions = crl_ext

[ by_name ]
commonName = supplied

[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = \${ENV::SERVER_SAN}

[ agency_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ crl_ext ]
authorityKeyIdentifier = keyid
CONF
}

make_ca() {
    mkdir -p "$dir/ca-db/issued"
    chmod 700 "$dir/ca-db"
    : >"$dir/ca-db/index.txt"
    openssl rand -hex 16 >"$dir/ca-db/serial"
    echo 01 >"$dir/ca-db/crlnumber"
    write_config
    new_key "$dir/ca.key"
    # A name of its own, so that a certificate of another provisioning is
    # of an unknown issuer, not of a namesake whose signature fails.
    ossl req -x509 -new -key "$dir/ca.key" -subj "/CN=Loteria Nacional CA $(openssl rand -hex 4)" -days 3650 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$dir/ca.pem"
}

# issue NAME CN EXTENSIONS: NAME.key and NAME.pem, signed by the CA.
issue() {
    local name=$1 cn=$2 ext=$3
    new_key "$dir/$name.key"
    ossl req -new -key "$dir/$name.key" -subj "/CN=$cn" -out "$dir/ca-db/$name.csr"
    SERVER_SAN=${SERVER_SAN:-DNS:server} ossl ca -batch -notext -config "$dir/ca-db/openssl.cnf" \
        -extensions "$ext" -in "$dir/ca-db/$name.csr" -out "$dir/$name.pem"
    rm -f "$dir/ca-db/$name.csr"
}

make_crl() {
    SERVER_SAN=DNS:server ossl ca -gencrl -config "$dir/ca-db/openssl.cnf" -out "$dir/crl.pem"
}

# DNS:server,DNS:localhost,IP:127.0.0.1 from server,localhost,127.0.0.1
san_of() {
    local out="" name
    local IFS=,
    for name in $1; do
        case "$name" in
        *[!0-9.]*) out="$out,DNS:$name" ;;
        *) out="$out,IP:$name" ;;
        esac
    done
    echo "${out#,}"
}

# Whether $1 (a certificate) is revoked in the CA's records.
revoked() {
    local serial
    serial=$(openssl x509 -noout -serial -in "$1")
    serial=${serial#serial=}
    awk -F'\t' -v serial="$serial" '$1 == "R" && toupper($4) == toupper(serial) { found = 1 } END { exit !found }' \
        "$dir/ca-db/index.txt"
}

agency_number() {
    case "$1" in
    '' | *[!0-9]* | 0*) echo "$0: the agency must be a number from 1 on, not '$1'" >&2 && exit 2 ;;
    esac
}

case "$1" in
--revoke | --rotate)
    [ "$#" -eq 2 ] || usage
    agency_number "$2"
    cert="$dir/agency-$2.pem"
    [ -f "$cert" ] || {
        echo "$0: no certificate for agency $2 in $dir" >&2
        exit 1
    }
    write_config
    # Revoking twice is no error: --rotate after --revoke is the way back.
    if ! revoked "$cert"; then
        SERVER_SAN=DNS:server ossl ca -config "$dir/ca-db/openssl.cnf" -revoke "$cert"
    fi
    make_crl
    if [ "$1" = --rotate ]; then
        issue "agency-$2" "agency-$2" agency_ext
        echo "agency $2: new key and certificate in $dir; the old certificate is revoked"
    else
        # The files stay: making credentials again does not replace them,
        # so the agency stays out until someone rotates it on purpose.
        echo "agency $2: certificate revoked (--rotate gives it a new one)"
    fi
    echo "restart the server to apply it (it resumes its round)"
    ;;
*)
    [ "$#" -le 2 ] || usage
    case "$1" in
    '' | *[!0-9]*) echo "$0: N must be a number of agencies, not '$1'" >&2 && exit 2 ;;
    esac
    agencies=$((10#$1))
    names=${2:-server,localhost,127.0.0.1}
    [ -f "$dir/ca.pem" ] || make_ca
    write_config
    [ -f "$dir/server.pem" ] || SERVER_SAN=$(san_of "$names") issue server server server_ext
    [ -f "$dir/operator.pem" ] || issue operator operator agency_ext
    for ((k = 1; k <= agencies; k++)); do
        [ -f "$dir/agency-$k.pem" ] || issue "agency-$k" "agency-$k" agency_ext
    done
    [ -f "$dir/crl.pem" ] || make_crl
    ;;
esac
