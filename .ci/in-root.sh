#!/usr/bin/env bash
# Run a command inside a root made by .ci/debian-root.sh, with a clean
# environment (nothing of the host's PATH, pip or Python settings leaks in)
# and the root's /opt/venv first on PATH:
#
#   .ci/in-root.sh ROOT CMD [ARG...]          e.g. .ci/in-root.sh /tmp/a64 pip list
#   .ci/in-root.sh ROOT env VAR=1 CMD ...     to set variables inside
#
# /proc, /sys and /dev are the caller's to bind-mount (and unmount) around a
# session that needs them, so that parallel commands share one set of mounts.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 ROOT CMD [ARG...]" >&2
    exit 2
fi
ROOT="$1"; shift
exec env -i PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb TMPDIR=/tmp \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_NO_CACHE_DIR=1 \
    chroot "$ROOT" "$@"
