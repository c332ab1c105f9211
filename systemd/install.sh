#!/usr/bin/env bash
# Install lensbox as a service: run once on the box (as root) after installing lensbox into a
# system path, e.g. `python3 -m venv /opt/lensbox && /opt/lensbox/bin/pip install .` from the
# source tree (lensbox is not on PyPI; see systemd/README.md).
#
#   sudo systemd/install.sh --prefix /opt/lensbox [--bundle catalog.lbx]
#
# It creates the system user `lensbox`, lays out /etc/lensbox/lensbox.toml (from the example,
# never overwriting an existing one) and /var/lib/lensbox/{bundles,journal}, installs
# lensbox.service and lensbox-kiosk.service with a DeviceAllow= drop-in generated from the
# config, and enables them. Re-running it updates the units and keeps config and data.
#
# Options:
#   --prefix DIR     where lensbox is installed; ExecStart uses DIR/bin/lensbox
#                    (default: the directory of `command -v lensbox`, else /usr/local)
#   --bindir DIR     the directory holding the lensbox executable (overrides --prefix)
#   --bundle DIR     deploy this bundle as instance "default" (checked first)
#   --no-kiosk       do not install/enable lensbox-kiosk.service
#   --no-enable      install files only (no systemctl enable/start)
#   --no-start       enable but do not start now
#   --mdwe MODE      auto (default): add MemoryDenyWriteExecute=yes when the model runs under
#                    that rule on this board (python3 -m lensbox.device.appliance.mdwe); yes; no
#   --dry-run        print what would be done, change nothing
#   DESTDIR=/tmp/root (environment): install into a staging root; no user is created, no
#                    chown, and systemctl runs with --root (enable symlinks only, no start)
set -euo pipefail

DESTDIR="${DESTDIR:-}"
PREFIX=""
BINDIR=""
BUNDLE=""
KIOSK=1
ENABLE=1
START=1
MDWE=auto
DRY=0
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF_DIR=/etc/lensbox
STATE_DIR=/var/lib/lensbox
UNIT_DIR=/etc/systemd/system
USER_NAME=lensbox

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }
run() {
    if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) PREFIX="${1#*=}"; shift ;;
        --bindir) BINDIR="${2:?--bindir needs a directory}"; shift 2 ;;
        --bindir=*) BINDIR="${1#*=}"; shift ;;
        --bundle) BUNDLE="${2:?--bundle needs a directory}"; shift 2 ;;
        --bundle=*) BUNDLE="${1#*=}"; shift ;;
        --no-kiosk) KIOSK=0; shift ;;
        --no-enable) ENABLE=0; shift ;;
        --no-start) START=0; shift ;;
        --mdwe) MDWE="${2:?--mdwe needs auto, yes or no}"; shift 2 ;;
        --mdwe=*) MDWE="${1#*=}"; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
case "$MDWE" in auto|yes|no) ;; *) die "--mdwe must be auto, yes or no" ;; esac

# -- where is lensbox --------------------------------------------------------------------
if [ -z "$BINDIR" ]; then
    if [ -n "$PREFIX" ]; then
        BINDIR="$PREFIX/bin"
    elif command -v lensbox >/dev/null 2>&1; then
        BINDIR="$(dirname "$(command -v lensbox)")"
    else
        BINDIR=/usr/local/bin
    fi
fi
LENSBOX="$BINDIR/lensbox"
# The interpreter lensbox runs with (its script's #! line), for the MDWE probe.
PYTHON="$(head -n 1 "$LENSBOX" 2>/dev/null | sed -n 's/^#! *//p' | cut -d' ' -f1)"
[ -n "$PYTHON" ] && [ -x "$PYTHON" ] || PYTHON="$(command -v python3 || echo python3)"
if [ ! -x "$LENSBOX" ]; then
    say "warning: $LENSBOX is not executable yet; the units will point there anyway"
fi
# The unit runs with ProtectHome=yes and PrivateTmp=yes: the service sees an empty /home,
# /root, /run/user and a private /tmp, so a lensbox (or the Python it runs with) living
# there cannot start. Warn now rather than leave a unit that fails with status 203/EXEC.
hidden_from_unit() {
    local path="$1" real
    real="$(readlink -f -- "$path" 2>/dev/null || echo "$path")"
    for p in "$path" "$real"; do
        case "$p" in
            /tmp/*|/var/tmp/*|/home/*|/root/*|/run/user/*) echo "$p"; return 0 ;;
        esac
    done
    return 1
}
for exe in "$LENSBOX" "$PYTHON"; do
    if seen="$(hidden_from_unit "$exe")"; then
        say "warning: the service runs $exe, which resolves to $seen; lensbox.service" \
            "has ProtectHome=yes and PrivateTmp=yes and cannot see it. Install lensbox into a" \
            "system path with a system Python (e.g. /usr/bin/python3 -m venv /opt/lensbox &&" \
            "/opt/lensbox/bin/pip install . , then --prefix /opt/lensbox); see systemd/README.md"
    fi
done
if [ -z "$DESTDIR" ] && [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or set DESTDIR=... to install into a staging root, or --dry-run)"
fi

ROOT="${DESTDIR%/}"
say "installing into ${ROOT:-/} (lensbox: $LENSBOX)"

# -- user --------------------------------------------------------------------------------
if [ -z "$DESTDIR" ]; then
    if ! getent passwd "$USER_NAME" >/dev/null; then
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "lensbox search daemon" "$USER_NAME"
    fi
else
    say "DESTDIR set: not creating user $USER_NAME (the package's postinst should)"
fi

# -- directories and config ----------------------------------------------------------------
run install -d -m 0755 "$ROOT$CONF_DIR"
run install -d -m 0750 "$ROOT$STATE_DIR" "$ROOT$STATE_DIR/bundles" "$ROOT$STATE_DIR/journal"
run install -d -m 0755 "$ROOT$UNIT_DIR"
run install -m 0644 "$HERE/lensbox.example.toml" "$ROOT$CONF_DIR/lensbox.toml.example"
if [ -e "$ROOT$CONF_DIR/lensbox.toml" ]; then
    say "keeping existing $CONF_DIR/lensbox.toml"
else
    run install -m 0640 "$HERE/lensbox.example.toml" "$ROOT$CONF_DIR/lensbox.toml"
fi
if [ -z "$DESTDIR" ]; then
    run chown root:"$USER_NAME" "$CONF_DIR/lensbox.toml"
    run chown "$USER_NAME:$USER_NAME" "$STATE_DIR" "$STATE_DIR/bundles" "$STATE_DIR/journal"
fi

# -- units -------------------------------------------------------------------------------
UNITS=(lensbox.service)
[ "$KIOSK" = 1 ] && UNITS+=(lensbox-kiosk.service)
for unit in "${UNITS[@]}"; do
    if [ "$DRY" = 1 ]; then
        echo "+ write $ROOT$UNIT_DIR/$unit (ExecStart=$LENSBOX ...)"
    else
        sed "s#/usr/local/bin/lensbox#$LENSBOX#g" "$HERE/$unit" > "$ROOT$UNIT_DIR/.$unit.tmp"
        chmod 0644 "$ROOT$UNIT_DIR/.$unit.tmp"
        mv -f "$ROOT$UNIT_DIR/.$unit.tmp" "$ROOT$UNIT_DIR/$unit"
    fi
done

# DeviceAllow= drop-in from the config (the camera and serial devices it names).
DROPIN="$(mktemp)"
trap 'rm -f "$DROPIN" "$DROPIN.err"' EXIT
CFG="$ROOT$CONF_DIR/lensbox.toml"
[ -e "$CFG" ] || CFG="$HERE/lensbox.example.toml"  # --dry-run: nothing was copied
if [ -x "$LENSBOX" ] && "$LENSBOX" config dropin "$CFG" >"$DROPIN" 2>"$DROPIN.err"; then
    say "device drop-in from $CFG: $(grep -c '^DeviceAllow=/' "$DROPIN") device(s)"
else
    [ -s "$DROPIN.err" ] && sed 's/^/install.sh: config: /' "$DROPIN.err" >&2
    say "warning: could not read devices from $CFG; allowing /dev/video0 and /dev/ttyUSB0"
    printf '%s\n' "[Service]" "DeviceAllow=" "DeviceAllow=/dev/video0 rw" \
        "DeviceAllow=/dev/ttyUSB0 rw" >"$DROPIN"
fi

case "$MDWE" in
    yes) USE_MDWE=1 ;;
    no) USE_MDWE=0 ;;
    auto)
        if "$PYTHON" -m lensbox.device.appliance.mdwe >/dev/null 2>&1; then USE_MDWE=1; else USE_MDWE=0; fi
        say "MemoryDenyWriteExecute probe: $([ $USE_MDWE = 1 ] && echo passed || echo 'not enabled')"
        ;;
esac

for unit in "${UNITS[@]}"; do
    run install -d -m 0755 "$ROOT$UNIT_DIR/$unit.d"
    if [ "$DRY" = 1 ]; then
        echo "+ write $ROOT$UNIT_DIR/$unit.d/devices.conf:"; sed 's/^/    /' "$DROPIN"
    else
        install -m 0644 "$DROPIN" "$ROOT$UNIT_DIR/$unit.d/devices.conf"
    fi
    if [ "$USE_MDWE" = 1 ]; then
        if [ "$DRY" = 1 ]; then
            echo "+ write $ROOT$UNIT_DIR/$unit.d/mdwe.conf (MemoryDenyWriteExecute=yes)"
        else
            printf '%s\n' "# The model ran under this rule on this board (lensbox.device.appliance.mdwe)." \
                "[Service]" "MemoryDenyWriteExecute=yes" >"$ROOT$UNIT_DIR/$unit.d/mdwe.conf"
            chmod 0644 "$ROOT$UNIT_DIR/$unit.d/mdwe.conf"
        fi
    else
        run rm -f "$ROOT$UNIT_DIR/$unit.d/mdwe.conf"
    fi
done

# -- first bundle ------------------------------------------------------------------------
if [ -n "$BUNDLE" ]; then
    run "$LENSBOX" deploy "$BUNDLE" --to "$ROOT$STATE_DIR/bundles/default"
    if [ -z "$DESTDIR" ]; then
        run chown -R "$USER_NAME:$USER_NAME" "$STATE_DIR/bundles"
    fi
fi

# -- enable ------------------------------------------------------------------------------
if [ "$ENABLE" = 1 ] && ! command -v systemctl >/dev/null 2>&1; then
    say "warning: systemctl not found; enable ${UNITS[*]} yourself"
elif [ "$ENABLE" = 1 ]; then
    if [ -n "$DESTDIR" ]; then
        run systemctl --root="$ROOT" enable "${UNITS[@]}"
    else
        run systemctl daemon-reload
        if [ "$START" = 1 ]; then
            run systemctl enable --now "${UNITS[@]}"
        else
            run systemctl enable "${UNITS[@]}"
        fi
    fi
fi
say "done. Check: lensbox config check $CONF_DIR/lensbox.toml; journalctl -u lensbox -f"
