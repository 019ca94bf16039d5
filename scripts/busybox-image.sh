#!/bin/sh
# Makes the busybox image (busybox:latest unless given) from the host's
# static busybox, for an engine that has no images and reaches no registry.
# Installs Debian's busybox-static when it is missing and we may; otherwise
# says what to install. Does nothing when the image exists already.
#
#   sh scripts/busybox-image.sh [IMAGE]
set -eu

image=${1:-busybox:latest}

if [ "$#" -gt 1 ]; then
    echo "usage: sh $0 [IMAGE]" >&2
    exit 2
fi

docker image inspect "$image" >/dev/null 2>&1 && exit 0

# A busybox that needs no shared library, so that it runs alone in an image.
is_static() {
    [ -x "$1" ] && LC_ALL=C ldd "$1" 2>&1 | grep -q 'not a dynamic executable'
}

busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if is_static "$candidate"; then
        busybox=$candidate
        break
    fi
done

if [ -z "$busybox" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "$0: installing Debian's busybox-static to make $image" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq && apt-get install -y -qq busybox-static; } >/dev/null 2>&1; then
            echo "$0: could not install busybox-static with apt-get" >&2
            exit 1
        fi
        busybox=/bin/busybox
    else
        echo "$0: no static busybox on this host to make $image from;" \
            "install Debian's busybox-static (apt-get install busybox-static, as root)" >&2
        exit 1
    fi
fi

dir=$(mktemp -d)
trap 'rm -rf -- "$dir"' EXIT
mkdir "$dir/context"
cp -- "$busybox" "$dir/context/busybox"
cat >"$dir/context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
DOCKERFILE
if ! docker build -q -t "$image" "$dir/context" >/dev/null 2>"$dir/build.log"; then
    echo "$0: docker build of $image from $busybox failed:" >&2
    cat "$dir/build.log" >&2
    exit 1
fi
echo "$0: made $image from $busybox" >&2
