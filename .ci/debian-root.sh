#!/usr/bin/env bash
# Make a Debian root of another architecture that runs under qemu-user, with
# the distribution's Python, its headers and gcc, ready for pip:
#
#   .ci/debian-root.sh ARCH ROOT [PACKAGE...]     # ARCH: arm64, armhf, ...
#
# - debootstrap (minbase) from the Debian mirror and release this machine
#   uses itself (its apt sources), plus python3-venv python3-dev gcc
#   libc6-dev ca-certificates and any PACKAGEs;
# - the host's DNS, pip and CA configuration copied in (pip goes through the
#   same proxy and trusts the same certificates as on the host);
# - a virtualenv at ROOT/opt/venv with an up-to-date pip.
#
# Run commands inside with .ci/in-root.sh ROOT CMD...  Needs root,
# debootstrap, qemu-user-static and binfmt-support (installed by .ci/run);
# registers the qemu binfmt handlers if binfmt_misc is not mounted yet.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    echo "usage: $0 ARCH ROOT [PACKAGE...]" >&2
    exit 2
fi
ARCH="$1" ROOT="$2"; shift 2
EXTRA=("$@")

# Run foreign binaries: binfmt_misc with the qemu handlers (the F flag of
# qemu-user-static's handlers lets a chroot run them without a copy of qemu).
if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
case "$ARCH" in
    arm64) QEMU_NAME=qemu-aarch64 ;;
    armhf|armel) QEMU_NAME=qemu-arm ;;
    *) QEMU_NAME="qemu-$ARCH" ;;
esac
update-binfmts --enable "$QEMU_NAME" >/dev/null 2>&1 || true
grep -qs '^enabled' "/proc/sys/fs/binfmt_misc/$QEMU_NAME" || {
    echo "error: no binfmt_misc handler $QEMU_NAME: apt-get install qemu-user-static binfmt-support" >&2
    exit 1
}

# The host's own Debian mirror and release (deb822 .sources or one-line
# .list files), so the root comes from where this machine's packages come.
read -r MIRROR SUITE < <(python3 - <<'EOF'
import glob, os, re
codename = ""
for line in open("/etc/os-release"):
    if line.startswith("VERSION_CODENAME="):
        codename = line.split("=", 1)[1].strip().strip('"')
entries = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = dict(re.findall(r"^(\w[\w-]*):[ \t]*(.*)$", stanza, re.MULTILINE))
        if fields.get("Enabled", "yes").lower() == "no" or "deb" not in fields.get("Types", "").split():
            continue
        for uri in fields.get("URIs", "").split():
            entries.append((uri, fields.get("Suites", "").split()))
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    if os.path.exists(path):
        for line in open(path):
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                entries.append((m.group(1), [m.group(2)]))
for uri, suites in entries:
    if codename in suites and not uri.rstrip("/").endswith("-security"):
        print(uri, codename)
        break
else:
    raise SystemExit(f"no apt source for the release {codename!r} in /etc/apt")
EOF
)

step() { printf '\n-- %s --\n' "$*"; }
t0=$(date +%s)
step "debootstrap $ARCH $SUITE from $MIRROR into $ROOT"
mkdir -p "$ROOT"
PKGS="python3-venv,python3-dev,gcc,libc6-dev,ca-certificates"
for p in "${EXTRA[@]}"; do PKGS="$PKGS,$p"; done
debootstrap --arch="$ARCH" --variant=minbase --include="$PKGS" "$SUITE" "$ROOT" "$MIRROR" \
    > "$ROOT.debootstrap.log" 2>&1 || { tail -30 "$ROOT.debootstrap.log" >&2; exit 1; }
rm -f "$ROOT.debootstrap.log"
echo "debootstrap: $(( $(date +%s) - t0 )) s"

step "host configuration: DNS, pip, CA certificates"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi

step "virtualenv /opt/venv"
bash .ci/in-root.sh "$ROOT" python3 -m venv /opt/venv
bash .ci/in-root.sh "$ROOT" pip install -q --upgrade pip
bash .ci/in-root.sh "$ROOT" python -c 'import platform, sys; print("root ready:", platform.machine(), "Python", sys.version.split()[0])'
echo "root: $(( $(date +%s) - t0 )) s"
