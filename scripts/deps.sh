#!/usr/bin/env bash
# deps.sh [GROUP...] - install the Debian 12 packages apiary needs.
#
#   build  compiler, libraries and headers (the default)
#   test   build + PostgreSQL 15, pytest, requests, psycopg, procps, curl,
#          prometheus (promtool), chromium (status page test), wrk and
#          gnuplot-nox (load-test tests),
#          what test_install.py checks the packaging with: mandoc,
#          man-db (man, lexgrog), systemd (systemd-analyze), logrotate,
#          sysvinit-utils (/lib/lsb/init-functions)
#   fuzz   clang with libFuzzer
#   bench  wrk, nginx (nginx-light if apt knows it), curl, procps, gnuplot-nox
#   lint   clang-format, cppcheck, clang-tidy
#
# Only missing packages are installed; "apt-get update" runs only if something
# is missing, at most once.  Prints nothing when all is installed; apt output
# goes to a log that is shown only on failure.  No service is started by the
# install: a temporary /usr/sbin/policy-rc.d (exit 101) is put in place unless
# one exists already, so e.g. nginx does not end up listening on port 80.
#
# Needs nothing beyond what every Debian system has (bash, dpkg, apt).

set -euo pipefail

prog=deps.sh
export DEBIAN_FRONTEND=noninteractive

declare -A seen=()
want=()

add() {
    local p
    for p in "$@"; do
        if [[ -z ${seen[$p]-} ]]; then
            seen[$p]=1
            want+=("$p")
        fi
    done
}

group() {
    case $1 in
    build)
        add gcc make pkg-config libpq-dev libbsd-dev libjansson-dev zlib1g-dev libssl-dev \
            libcmocka-dev
        ;;
    test)
        group build
        add postgresql-15 python3-pytest python3-requests python3-psycopg python3-jsonschema \
            procps curl
        # metrics tests (issue 8): promtool checks GET /metrics, a headless
        # chromium renders the status page; setpriv (util-linux) is essential
        add prometheus chromium
        # load-test tests (issue 11): wrk drives the throughput phase,
        # gnuplot draws the result plot
        add wrk gnuplot-nox
        # packaging checks (issue 9: test_install.py)
        add mandoc man-db systemd logrotate sysvinit-utils
        ;;
    fuzz) add clang libclang-rt-14-dev ;;
    # "@nginx" is resolved below: any installed nginx flavour satisfies it.
    # gnuplot-nox: scripts/loadtest's latency plots.
    bench) add wrk @nginx curl procps gnuplot-nox ;;
    lint) add clang-format cppcheck clang-tidy ;;
    *)
        echo "$prog: unknown group '$1' (build, test, fuzz, bench, lint)" >&2
        exit 2
        ;;
    esac
}

if (($# == 0)); then
    set -- build
fi
for g in "$@"; do
    group "$g"
done

nginx_flavours=(nginx-light nginx nginx-core nginx-full nginx-extras)

# One dpkg-query for everything; packages dpkg never heard of are just absent.
declare -A installed=()
while read -r pkg status; do
    if [[ $status == "install ok installed" ]]; then
        installed[$pkg]=1
    fi
done < <(dpkg-query -W -f='${Package} ${Status}\n' \
    "${want[@]/#@nginx/${nginx_flavours[0]}}" "${nginx_flavours[@]}" \
    2>/dev/null || true)

missing=()
need_nginx=0
for p in "${want[@]}"; do
    if [[ $p == @nginx ]]; then
        have=0
        for f in "${nginx_flavours[@]}"; do
            [[ -n ${installed[$f]-} ]] && have=1
        done
        ((have)) || need_nginx=1
    elif [[ -z ${installed[$p]-} ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0 && need_nginx == 0)); then
    exit 0
fi

# Privileges: root does it, otherwise sudo, otherwise say what to run.
if ((EUID == 0)); then
    priv=()
elif command -v sudo >/dev/null 2>&1; then
    priv=(sudo env DEBIAN_FRONTEND=noninteractive)
else
    show=("${missing[@]}")
    ((need_nginx)) && show+=(nginx-light)
    echo "$prog: missing packages: ${show[*]}" >&2
    echo "$prog: run as root: apt-get update && apt-get install -y ${show[*]}" >&2
    exit 1
fi

log=$(mktemp -t apiary-deps.XXXXXX)
policy=/usr/sbin/policy-rc.d
made_policy=0

cleanup() {
    if ((made_policy)); then
        "${priv[@]}" rm -f "$policy"
    fi
    rm -f "$log"
}
trap cleanup EXIT

# run DESCRIPTION CMD...: run quietly into the log; on failure show the log.
run() {
    local what=$1
    shift
    if ! "${priv[@]}" "$@" >>"$log" 2>&1; then
        echo "$prog: $what failed; log follows" >&2
        tail -n 60 "$log" >&2
        exit 1
    fi
}

apt=(apt-get -qq -y -o DPkg::Lock::Timeout=300
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

run "apt-get update" "${apt[@]}" update

if ((need_nginx)); then
    # nginx-light is the small flavour; fall back to plain nginx.
    if apt-cache show nginx-light >/dev/null 2>&1; then
        missing+=(nginx-light)
    else
        missing+=(nginx)
    fi
fi

echo "$prog: installing ${missing[*]}" >&2

# Keep postinst scripts from starting daemons (nginx on :80, the system
# PostgreSQL cluster on :5432): invoke-rc.d and deb-systemd-invoke obey it.
if [[ ! -e $policy ]]; then
    tmp=$(mktemp -t apiary-policy.XXXXXX)
    printf '#!/bin/sh\n# Temporary, from apiary scripts/deps.sh.\nexit 101\n' >"$tmp"
    made_policy=1
    if ! "${priv[@]}" install -m 0755 "$tmp" "$policy"; then
        rm -f "$tmp"
        echo "$prog: cannot create $policy" >&2
        exit 1
    fi
    rm -f "$tmp"
fi

run "apt-get install ${missing[*]}" "${apt[@]}" install "${missing[@]}"

if ((need_nginx)); then
    # Under systemd the unit got enabled (policy-rc.d only blocks starting);
    # keep it off so a reboot does not start it either.
    if [[ -d /run/systemd/system ]]; then
        "${priv[@]}" systemctl disable --now nginx.service >>"$log" 2>&1 || true
    fi
    # Belt and braces: if a pre-existing policy let the package start nginx,
    # stop that daemon (nginx was not installed before this run).
    if [[ -s /run/nginx.pid ]]; then
        pid=$(cat /run/nginx.pid)
        if [[ $pid =~ ^[0-9]+$ ]]; then
            "${priv[@]}" kill -QUIT "$pid" 2>/dev/null || true
        fi
    fi
fi
