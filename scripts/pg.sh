#!/usr/bin/env bash
# pg.sh start|stop|status|psql [ARGS...]|url - a private PostgreSQL 15 cluster.
#
#   APIARY_PG_DIR   cluster area (default <project>/var/pg):
#                   data/ (PGDATA), run/ (unix socket), log (server log)
#   APIARY_PG_PORT  TCP port on 127.0.0.1 (default 54329)
#   APIARY_PG_DB    database created by "start" (default apiary)
#   APIARY_PG_BIN   PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#
# Several clusters can run side by side with distinct DIR and PORT.  As root
# the server runs as the "postgres" user (initdb and postgres refuse root), or
# as whoever owns an existing data directory; otherwise as the caller.
#
# DEVELOPMENT ONLY: initdb uses --auth=trust, so any local user can connect
# as any role.  The server listens on 127.0.0.1 and its own socket only.

set -euo pipefail

prog=pg.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
bin=${APIARY_PG_BIN:-/usr/lib/postgresql/15/bin}
dir=$(realpath -m -- "${APIARY_PG_DIR:-$root/var/pg}")
port=${APIARY_PG_PORT:-54329}
db=${APIARY_PG_DB:-apiary}
user=apiary
data=$dir/data
sock=$dir/run
logf=$dir/log

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    echo "usage: $prog start|stop|status|psql [ARGS...]|url" >&2
    exit 2
}

(($# >= 1)) || usage
cmd=$1
shift

if ! [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 65535)); then
    die "APIARY_PG_PORT='$port' is not a port number"
fi
[[ $db =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] ||
    die "APIARY_PG_DB='$db' must be a plain identifier"

url="postgresql://$user@127.0.0.1:$port/$db"
if [[ $cmd == url ]]; then
    echo "$url"
    exit 0
fi

[[ -x $bin/pg_ctl ]] ||
    die "no PostgreSQL 15 in $bin; run scripts/deps.sh test"

# sun_path holds 108 bytes including the NUL.
sockfile=$sock/.s.PGSQL.$port
((${#sockfile} <= 107)) ||
    die "socket path $sockfile is ${#sockfile} bytes, over the 107-byte limit of unix sockets; use a shorter APIARY_PG_DIR"

# Who runs initdb/pg_ctl: as root, the owner of an existing data directory
# or else "postgres"; otherwise the caller.
runas=
if ((EUID == 0)); then
    owner=
    [[ -d $data ]] && owner=$(stat -c %U -- "$data")
    if [[ -n $owner && $owner != root ]]; then
        runas=$owner
    else
        runas=postgres
    fi
    id -u "$runas" >/dev/null 2>&1 ||
        die "user '$runas' does not exist (it comes with postgresql-15)"
elif [[ -d $data && ! -O $data ]]; then
    die "$data belongs to $(stat -c %U -- "$data"); run as that user or root"
fi

# as_pg CMD...: run as the server's user, from a directory it can enter.
as_pg() {
    if [[ -n $runas ]]; then
        (cd / && runuser -u "$runas" -- "$@")
    else
        "$@"
    fi
}

pg_running() {
    [[ -f $data/PG_VERSION ]] &&
        as_pg "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1
}

psql_() {
    "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U "$user" "$@"
}

# Serialise start/stop on one area (parallel test runs, make run).
lock() {
    [[ -e $dir/lock ]] || as_pg touch -- "$dir/lock" || die "cannot create $dir/lock"
    exec 9<"$dir/lock" || die "cannot open $dir/lock"
    flock -w 120 9 || die "timed out waiting for the lock $dir/lock"
}

# Create the area, owned by the server's user, and check that user reaches it.
prepare() {
    mkdir -p -- "$dir" || die "cannot create $dir"
    # Hand a root-owned area to the server's user, but only an empty one (new,
    # or from mktemp -d): never chown a directory holding other things.
    if [[ -n $runas && $(stat -c %U -- "$dir") == root &&
        -z $(ls -A -- "$dir") ]]; then
        chown -- "$runas:" "$dir" || die "cannot chown $dir to $runas"
    fi
    as_pg test -d "$dir" -a -w "$dir" -a -x "$dir" ||
        die "${runas:-$(id -un)} cannot write $dir (use a new or empty directory it can own, with searchable parents)"
    as_pg mkdir -p -- "$sock" || die "cannot create $sock"
    as_pg touch -- "$dir/lock" "$logf" || die "cannot create files in $dir"
}

# The settings that depend on the environment are rewritten at every start,
# into apiary.conf, which postgresql.conf includes.
write_conf() {
    local q=\' qq=\'\'
    as_pg tee "$data/apiary.conf" >/dev/null <<EOF || die "cannot write $data/apiary.conf"
# Written by scripts/pg.sh at every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '${sock//$q/$qq}'
max_connections = 200
shared_buffers = 128MB
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

do_initdb() {
    local tmp=$dir/data.initdb
    as_pg rm -rf -- "$tmp"
    # --no-sync: a dev cluster; a crash during initdb just means rerunning.
    if ! as_pg "$bin/initdb" -D "$tmp" --auth=trust -U "$user" \
        --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1; then
        tail -n 20 "$dir/initdb.log" >&2
        die "initdb failed (full output in $dir/initdb.log)"
    fi
    echo "include_if_exists = 'apiary.conf'" |
        as_pg tee -a "$tmp/postgresql.conf" >/dev/null ||
        die "cannot edit $tmp/postgresql.conf"
    # Only a complete cluster ever appears as data/.
    as_pg mv -- "$tmp" "$data" || die "cannot move $tmp to $data"
}

do_start() {
    prepare
    lock
    [[ -d $data ]] || do_initdb
    [[ -f $data/PG_VERSION ]] ||
        die "$data exists but is not a PostgreSQL data directory"
    if ! pg_running; then
        write_conf
        # 9<&-: the postmaster must not inherit (and hold) the lock.
        if ! as_pg "$bin/pg_ctl" start -w -t 60 -D "$data" -l "$logf" \
            >/dev/null 2>&1 9<&-; then
            echo "$prog: PostgreSQL failed to start on port $port; tail of $logf:" >&2
            tail -n 20 "$logf" >&2
            exit 1
        fi
    fi
    local have
    have=$(psql_ -d postgres -tAc "select 1 from pg_database where datname = '$db'") ||
        die "cannot query the server on $sock port $port"
    if [[ $have != 1 ]]; then
        psql_ -d postgres -c "create database \"$db\"" >/dev/null ||
            die "cannot create database $db"
    fi
}

do_stop() {
    [[ -d $dir && -f $data/PG_VERSION ]] || return 0
    lock
    pg_running || return 0
    as_pg "$bin/pg_ctl" stop -w -t 60 -m fast -D "$data" >/dev/null 2>&1 ||
        die "PostgreSQL in $data did not stop (see $logf)"
}

case $cmd in
start) do_start ;;
stop) do_stop ;;
status)
    if pg_running; then
        echo "running: $url (data $data)"
    else
        echo "not running ($data)"
        exit 1
    fi
    ;;
psql)
    pg_running || die "not running; run scripts/pg.sh start"
    exec "$bin/psql" -X -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U "$user" \
        -d "$db" "$@"
    ;;
*) usage ;;
esac
