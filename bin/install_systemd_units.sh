#!/usr/bin/env bash
# Install costcontrol's systemd units (deploy/systemd/*.service): web (gunicorn), Celery worker,
# Celery beat and the standalone GPU tracker.
#
#   sudo bin/install_systemd_units.sh [--user USER] [--group GROUP] [--app-dir DIR] [--env-file FILE]
#                                     [--prefix DIR] [--gpu-tracker] [--dry-run]
#
#   --user USER      the account the services run as (default: the owner of the app directory)
#   --group GROUP    its group (default: USER's primary group)
#   --app-dir DIR    the checkout with its .venv (default: this script's repository)
#   --env-file FILE  environment file every unit reads (default: /etc/costcontrol/costcontrol.env)
#   --prefix DIR     where the unit files go (default: /etc/systemd/system)
#   --gpu-tracker    also enable costcontrol-gpu-tracker (on a GPU host; the beat task samples GPUs too)
#   --dry-run        run no systemctl command, print what would be run; files are written only into
#                    an explicit --prefix (without one, nothing is written)
#
# The units are written with the app directory, user, group and environment file filled in.
# Then, unless --dry-run or where systemctl does not exist: `systemctl daemon-reload` and
# `systemctl enable` of the web, worker and beat units (and the GPU tracker with --gpu-tracker).
set -o errexit -o pipefail -o nounset

repo=$(cd "$(dirname "$0")/.." && pwd)
source_dir="$repo/deploy/systemd"
app_dir=$repo
prefix=/etc/systemd/system
prefix_given=0
env_file=/etc/costcontrol/costcontrol.env
user=""
group=""
dry_run=0
gpu_tracker=0

die() {
    echo "install_systemd_units: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --user) user=${2:?--user needs a value}; shift 2 ;;
        --group) group=${2:?--group needs a value}; shift 2 ;;
        --app-dir) app_dir=${2:?--app-dir needs a value}; shift 2 ;;
        --env-file) env_file=${2:?--env-file needs a value}; shift 2 ;;
        --prefix) prefix=${2:?--prefix needs a value}; prefix_given=1; shift 2 ;;
        --gpu-tracker) gpu_tracker=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ -d "$app_dir" ] || die "--app-dir $app_dir is not a directory"
app_dir=$(cd "$app_dir" && pwd)
[ -x "$app_dir/.venv/bin/python" ] || die "$app_dir/.venv/bin/python not found: create the venv first (make venv)"
case "$env_file" in /*) ;; *) die "--env-file must be an absolute path, got $env_file" ;; esac
[ -n "$user" ] || user=$(stat -c %U "$app_dir")
id "$user" >/dev/null 2>&1 || die "--user $user: no such user"
[ -n "$group" ] || group=$(id -gn "$user")
for value in "$app_dir" "$user" "$group" "$env_file"; do
    # Unit files split on whitespace and expand % and $; refuse what would need quoting.
    case "$value" in *[[:space:]%\$\\\|\&]*) die "cannot use '$value' in a unit file (whitespace or % \$ \\ | &)" ;; esac
done

units=(costcontrol-web.service costcontrol-worker.service costcontrol-beat.service costcontrol-gpu-tracker.service)
enable=(costcontrol-web.service costcontrol-worker.service costcontrol-beat.service)
[ "$gpu_tracker" = 1 ] && enable+=(costcontrol-gpu-tracker.service)

write=1
if [ "$dry_run" = 1 ] && [ "$prefix_given" = 0 ]; then
    write=0
fi
[ "$write" = 1 ] && mkdir -p "$prefix"

for unit in "${units[@]}"; do
    rendered=$(sed -e "s|@APP_DIR@|$app_dir|g" -e "s|@USER@|$user|g" -e "s|@GROUP@|$group|g" \
        -e "s|@ENV_FILE@|$env_file|g" "$source_dir/$unit")
    if grep -q '@[A-Z_]*@' <<<"$rendered"; then
        die "$unit: placeholder left after substitution: $(grep -o '@[A-Z_]*@' <<<"$rendered" | head -n 1)"
    fi
    if [ "$write" = 1 ]; then
        # Written beside the target and renamed: a unit file is never seen half-written.
        printf '%s\n' "$rendered" >"$prefix/.$unit.tmp"
        chmod 644 "$prefix/.$unit.tmp"
        mv -f "$prefix/.$unit.tmp" "$prefix/$unit"
        echo "installed $prefix/$unit"
    else
        echo "would install $prefix/$unit"
    fi
done

if [ ! -e "$env_file" ]; then
    echo "note: $env_file does not exist yet; create it (DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DATABASE_URL, ...)" >&2
fi

if [ "$dry_run" = 1 ]; then
    echo "dry run: would run: systemctl daemon-reload"
    echo "dry run: would run: systemctl enable ${enable[*]}"
elif command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload
    systemctl enable "${enable[@]}"
    echo "enabled ${enable[*]}; start them with: systemctl start ${enable[*]}"
else
    echo "systemctl not found: units written, nothing enabled"
fi
