#!/usr/bin/env bash
# install.sh — install (or re-install) colorgate as a systemd service. As root:
#
#   packaging/install.sh [--self-signed] [BINARY]
#
# BINARY defaults to target/release/colorgate (cargo build --release).
# --self-signed: make a self-signed TLS pair if /etc/colorgate/tls has none.
#
# Safe to run again: an existing config, secret or certificate is never
# overwritten. When colorgate is already running, a changed binary is swapped
# in without downtime by colorgate-upgrade. Replaces the old deploy script
# (nginx site + Flask auth service + token script): see docs/MIGRATING.md.
set -euo pipefail

ETC=/etc/colorgate
CONF=$ETC/colorgate.yaml
SECRET=$ETC/jwt.secret
CERT=$ETC/tls/cert.pem
KEY=$ETC/tls/key.pem
BIN=/usr/local/bin/colorgate
UPGRADE=/usr/local/sbin/colorgate-upgrade
UNIT=colorgate.service
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

self_signed=false
src=$REPO/target/release/colorgate
for arg in "$@"; do
    case $arg in
        --self-signed) self_signed=true ;;
        -h|--help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
        -*) die "unknown option $arg (see --help)" ;;
        *) src=$arg ;;
    esac
done

[[ $EUID -eq 0 ]] || die "run as root"
[[ -x $src ]] || die "$src: no such executable (cargo build --release, or pass the binary's path)"
command -v systemctl >/dev/null || die "systemctl not found: this installs a systemd service"

# 1. The service account: no login, no home.
if ! getent group colorgate >/dev/null; then
    groupadd --system colorgate
    say "created group colorgate"
fi
if ! getent passwd colorgate >/dev/null; then
    useradd --system --gid colorgate --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "colorgate API gateway" colorgate
    say "created system user colorgate"
fi

# 2. Directories (systemd also creates /run/colorgate and /var/log/colorgate).
install -d -m 0750 -o root -g colorgate "$ETC" "$ETC/tls"
install -d -m 0750 -o colorgate -g colorgate /var/log/colorgate
say "directories $ETC, $ETC/tls (0750 root:colorgate), /var/log/colorgate"

# 3. systemd unit, logrotate, upgrade script.
install -m 0644 -o root -g root "$REPO/packaging/colorgate.service" "/etc/systemd/system/$UNIT"
install -m 0644 -o root -g root "$REPO/packaging/colorgate.logrotate" /etc/logrotate.d/colorgate
install -m 0755 -o root -g root "$REPO/packaging/colorgate-upgrade" "$UPGRADE"
systemctl daemon-reload
say "installed /etc/systemd/system/$UNIT, /etc/logrotate.d/colorgate, $UPGRADE"

# 4. Configuration: only if there is none (an edited one is never touched).
if [[ -e $CONF ]]; then
    say "kept existing $CONF"
else
    install -m 0640 -o root -g colorgate "$REPO/conf/colorgate.yaml" "$CONF"
    say "installed $CONF (edit upstreams, access.allowlist, routes; then: colorgate check -c $CONF)"
fi

# 5. The JWT signing secret: random, 0600, owned by the service, never printed.
if [[ -e $SECRET ]]; then
    say "kept existing $SECRET"
else
    (
        umask 077
        tmp=$(mktemp "$ETC/.jwt.secret.XXXXXX")
        head -c 32 /dev/urandom | base64 > "$tmp"
        chown colorgate:colorgate "$tmp"
        chmod 0600 "$tmp"
        mv -f "$tmp" "$SECRET"
    )
    say "created $SECRET (32 random bytes, base64; 0600 colorgate)"
fi

# 6. TLS pair.
if [[ -e $CERT && -e $KEY ]]; then
    say "kept existing $CERT and $KEY"
elif $self_signed; then
    cn=$(hostname -f 2>/dev/null || hostname)
    (umask 027 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -days 365 -subj "/CN=$cn" -addext "subjectAltName=DNS:$cn" \
        -keyout "$KEY" -out "$CERT" 2>/dev/null) || die "openssl failed to make a self-signed pair"
    chown root:colorgate "$KEY" "$CERT"
    chmod 0640 "$KEY"
    chmod 0644 "$CERT"
    say "created a self-signed certificate for $cn (365 days) in $ETC/tls; replace it with a real one"
else
    say "no TLS pair yet. Put your certificate chain and key (PEM) at:"
    say "    $CERT   (0644)   and   $KEY   (0640 root:colorgate)"
    say "  e.g. from Let's Encrypt: fullchain.pem -> cert.pem, privkey.pem -> key.pem"
    say "  or re-run with --self-signed for a test certificate; then run install.sh again."
fi

# 7. The binary: a running gateway is upgraded in place, without downtime.
if cmp -s "$src" "$BIN"; then
    say "$BIN is up to date"
elif systemctl is-active --quiet "$UNIT"; then
    say "colorgate is running: zero-downtime upgrade to $src"
    "$UPGRADE" "$src"
else
    install -m 0755 -o root -g root "$src" "$BIN.tmp"
    mv -f "$BIN.tmp" "$BIN"
    say "installed $BIN ($("$BIN" --version))"
fi

# 8. Check exactly as the service will (as colorgate), then enable and start.
if ! out=$(runuser -u colorgate -- "$BIN" check -c "$CONF" 2>&1); then
    echo "$out" >&2
    die "$CONF does not pass 'colorgate check' (above); fix it and run install.sh again. Not started."
fi
say "colorgate check: $out"
systemctl enable --now "$UNIT"
say "enabled and started $UNIT"
say "done. Next steps:"
say "  systemctl status colorgate        journalctl -u colorgate"
say "  colorgate token issue -c $CONF --user ID   (as root: mint a token)"
say "  systemctl reload colorgate        (after editing $CONF)"
say "  colorgate-upgrade NEW_BINARY      (zero-downtime binary upgrade)"
