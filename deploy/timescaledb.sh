#!/usr/bin/env bash
# TimescaleDB for the local PostgreSQL 15: built from source and installed when missing.
#
#   deploy/timescaledb.sh install      install TimescaleDB 2.28.3 unless one is installed
#   deploy/timescaledb.sh status       the installed version (exit 3 when none is)
#   deploy/timescaledb.sh source DIR   fetch and check the source, unpack it into DIR
#                                      (exit 4 when no source is reachable)
#
# An installed extension is used as is (nothing is rebuilt), except a 2.28.3 that was
# not built here with the patches of deploy/timescaledb-patches/ (see there: without
# them every background job fails on PostgreSQL 15.20).  Otherwise the source of the
# release tag 2.28.3 is patched, built (cmake, PostgreSQL's server headers: installed
# with apt-get when missing) and installed into PostgreSQL's own folders, with a stamp
# naming the patches.  The source comes from the first of:
#   1. TIMESCALEDB_SOURCE          a source archive; its sha256 must be the vendored one's
#   2. <repo>/../shared/vendor/timescaledb-2.28.3.tar.gz   (the same check)
#   3. TIMESCALEDB_URL, by default GitHub's tarball of the tag, when the machine is
#      online; its bytes are not stable, so the version in its version.config is checked
# No source at all: a warning naming TIMESCALEDB_SOURCE, and exit 0: metricx then runs on
# plain PostgreSQL (METRICX_TIMESCALEDB=auto chooses it).  A source that fails its
# check, or a failed build, is an error.
#
# Settings (environment):
#   TIMESCALEDB_SOURCE     a timescaledb-2.28.3 source archive
#   TIMESCALEDB_URL        where to download it from (default: the GitHub release tag)
#   POSTGRES_BIN           PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   METRICX_BUILD_JOBS     parallel compile jobs (default: the number of cores)
#
# Why 2.28: the last release line that supports PostgreSQL 15, Debian 12's.  Licences:
# Apache 2.0 outside tsl/, the Timescale License (self-hosting allowed) inside it, which
# holds compression, continuous aggregates' policies and the rest metricx uses.
set -Eeuo pipefail
shopt -s nullglob

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)

VERSION=2.28.3
SHA256=c80abd42995a317d9c046da6499a7a6e63c58e188124a2f20580f7c82fa4b801
UPSTREAM_URL=${TIMESCALEDB_URL:-https://github.com/timescale/timescaledb/archive/refs/tags/$VERSION.tar.gz}
VENDOR_DIR=$(cd "$REPO_ROOT/.." && pwd -P)/shared/vendor
VENDORED=$VENDOR_DIR/timescaledb-$VERSION.tar.gz
NO_SOURCE=4
PATCH_DIR=$SCRIPT_DIR/timescaledb-patches

POSTGRES_BIN=${POSTGRES_BIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$POSTGRES_BIN/pg_config
JOBS=${METRICX_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}

say() { printf '[timescaledb] %s\n' "$*"; }
warn() { printf '[timescaledb] warning: %s\n' "$*" >&2; }
die() { printf '[timescaledb] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------- what is installed

# the default_version of the installed control file, empty when there is none
installed_version() {
    local control
    control=$("$PG_CONFIG" --sharedir)/extension/timescaledb.control
    [[ -f $control ]] || return 0
    sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$control" | head -n1
}

# the loader library the server preloads, and the versioned library it loads
libraries_present() {
    local libdir
    libdir=$("$PG_CONFIG" --pkglibdir)
    [[ -f $libdir/timescaledb.so && -f $libdir/timescaledb-$1.so ]]
}

# what a build from here records: the version and the patches it applied
build_id() {
    local patches=("$PATCH_DIR"/*.patch)
    printf 'timescaledb %s patches %s\n' "$VERSION" \
        "$( ((${#patches[@]})) && cat "${patches[@]}" | sha256sum | cut -d' ' -f1)"
}

stamp_file() { printf '%s/extension/metricx-timescaledb.build' "$("$PG_CONFIG" --sharedir)"; }

cmd_status() {
    [[ -x $PG_CONFIG ]] || { echo "missing (no $PG_CONFIG)"; return 3; }
    local v
    v=$(installed_version)
    if [[ -n $v ]] && libraries_present "$v"; then
        if [[ $v == "$VERSION" ]] && [[ $(cat "$(stamp_file)" 2>/dev/null) != "$(build_id)" ]]; then
            echo "$v (not built with deploy/timescaledb-patches: make setup rebuilds it)"
            return 3
        fi
        echo "$v"
    else
        echo missing
        return 3
    fi
}

# ---------------------------------------------------------------------- build tools

apt_install() {
    local sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root to apt-get install $* (or install them yourself)"
        sudo=(sudo)
    fi
    say "installing Debian packages: $*"
    # postgresql-server-dev-15 may pull a PostgreSQL point release: keep the packages'
    # scripts from (re)starting system-wide clusters (as deploy/services.sh does).
    local made_policy=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0 apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q)
    "${apt[@]}" install -y "$@" || { "${apt[@]}" update && "${apt[@]}" install -y "$@"; } || rc=$?
    [[ -z $made_policy ]] || "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
    (( rc == 0 )) || die "apt-get install $* failed"
}

ensure_build_tools() {
    local need=()
    [[ -f $("$PG_CONFIG" --includedir-server)/postgres.h ]] || need+=("postgresql-server-dev-$("$PG_CONFIG" --version | sed 's/[^0-9]*\([0-9]*\).*/\1/')")
    command -v cmake >/dev/null || need+=(cmake)
    command -v cc >/dev/null && command -v make >/dev/null || need+=(build-essential)
    [[ -f /usr/include/openssl/ssl.h ]] || need+=(libssl-dev)
    (( ${#need[@]} == 0 )) || apt_install "${need[@]}"
}

# ---------------------------------------------------------------------- the source

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# check_archive FILE ORIGIN: the vendored archive's exact bytes
check_archive() {
    local got
    got=$(sha256_of "$1")
    [[ $got == "$SHA256" ]] \
        || die "$2 $1 has sha256 $got, expected $SHA256 (TimescaleDB $VERSION as the vendor README records); replace it, or unset TIMESCALEDB_SOURCE"
}

# check_tree DIR ORIGIN: a download's bytes vary, the version it records must not
check_tree() {
    local got
    got=$(sed -n 's/^version *= *\([^ ]*\).*/\1/p' "$1/version.config" 2>/dev/null | head -n1)
    [[ $got == "$VERSION" ]] || die "$2 holds TimescaleDB '${got:-no version.config}', expected $VERSION"
}

# fetch_source DIR: the checked source unpacked into DIR; returns $NO_SOURCE when none
# is reachable
fetch_source() {
    local dest=$1 archive origin tmp=
    if [[ -n ${TIMESCALEDB_SOURCE:-} ]]; then
        [[ -f $TIMESCALEDB_SOURCE ]] || die "TIMESCALEDB_SOURCE=$TIMESCALEDB_SOURCE is not a file"
        archive=$TIMESCALEDB_SOURCE origin=TIMESCALEDB_SOURCE
        check_archive "$archive" "$origin"
    elif [[ -f $VENDORED ]]; then
        archive=$VENDORED origin="the vendored archive"
        check_archive "$archive" "$origin"
    else
        tmp=$(mktemp "${TMPDIR:-/tmp}/timescaledb-$VERSION.XXXXXX.tar.gz")
        archive=$tmp origin=$UPSTREAM_URL
        say "no source archive (TIMESCALEDB_SOURCE is unset, $VENDORED is missing): downloading $UPSTREAM_URL"
        if ! command -v curl >/dev/null \
            || ! curl -fsSL --connect-timeout 15 --max-time 600 -o "$archive" "$UPSTREAM_URL"; then
            rm -f "$tmp"
            warn "no TimescaleDB source reachable: set TIMESCALEDB_SOURCE to timescaledb-$VERSION.tar.gz (sha256 $SHA256), put it in $VENDOR_DIR/, or run this online. Until then metricx uses plain PostgreSQL (METRICX_TIMESCALEDB=auto chooses it)"
            return "$NO_SOURCE"
        fi
    fi
    mkdir -p "$dest"
    if ! tar -xzf "$archive" -C "$dest" --strip-components=1; then
        [[ -z $tmp ]] || rm -f "$tmp"
        die "$origin: $archive is not a readable tar.gz"
    fi
    [[ -z $tmp ]] || rm -f "$tmp"
    check_tree "$dest" "$origin"
    say "source: TimescaleDB $VERSION from $origin ($archive)"
    local p
    command -v patch >/dev/null || apt_install patch
    for p in "$PATCH_DIR"/*.patch; do
        patch -d "$dest" -p1 --forward --batch --quiet <"$p" || die "$p does not apply to $origin"
        say "patched: $(basename "$p")"
    done
}

cmd_source() {
    [[ -n ${1:-} ]] || die "usage: deploy/timescaledb.sh source DIR"
    fetch_source "$1"
}

# ---------------------------------------------------------------------- install

cmd_install() {
    [[ -x $PG_CONFIG ]] || die "$PG_CONFIG not found: install PostgreSQL first (deploy/services.sh install) or set POSTGRES_BIN"
    local have
    have=$(installed_version)
    if [[ -n $have ]] && libraries_present "$have"; then
        if [[ $have != "$VERSION" ]]; then
            say "note: metricx is tested with $VERSION (patched, see deploy/timescaledb-patches); using the installed $have"
            say "TimescaleDB $have is installed in $("$PG_CONFIG" --sharedir)/extension (nothing to do)"
            return 0
        elif [[ $(cat "$(stamp_file)" 2>/dev/null) == "$(build_id)" ]]; then
            say "TimescaleDB $have is installed in $("$PG_CONFIG" --sharedir)/extension (nothing to do)"
            return 0
        fi
        say "TimescaleDB $have is installed without the patches of deploy/timescaledb-patches (background jobs fail on PostgreSQL 15.20): rebuilding it"
    fi
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/metricx-timescaledb.XXXXXX")
    # shellcheck disable=SC2064  # expand now: the folder is fixed
    trap "rm -rf '$work'" EXIT
    local rc=0
    fetch_source "$work/src" || rc=$?
    (( rc != NO_SOURCE )) || return 0
    (( rc == 0 )) || exit "$rc"
    ensure_build_tools
    local log=$work/build.log t0=$SECONDS
    say "building TimescaleDB $VERSION for $("$PG_CONFIG" --version) with $JOBS jobs (a few minutes; log $log)"
    if ! (
        cd "$work/src"
        ./bootstrap -DPG_CONFIG="$PG_CONFIG" -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
            -DWARNINGS_AS_ERRORS=OFF -DCMAKE_BUILD_TYPE=Release -DSEND_TELEMETRY_DEFAULT=OFF
        cd build
        make -j"$JOBS"
    ) >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        trap - EXIT
        die "the build failed (full log: $log)"
    fi
    local sudo=()
    [[ $EUID -eq 0 || -w $("$PG_CONFIG" --pkglibdir) ]] || sudo=(sudo)
    "${sudo[@]}" make -C "$work/src/build" install >>"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        trap - EXIT
        die "make install failed (full log: $log)"
    }
    have=$(installed_version)
    [[ $have == "$VERSION" ]] && libraries_present "$have" \
        || die "installed, yet $("$PG_CONFIG" --sharedir)/extension/timescaledb.control says '${have:-nothing}'"
    build_id | "${sudo[@]}" tee "$(stamp_file)" >/dev/null
    say "TimescaleDB $VERSION built and installed in $((SECONDS - t0))s; deploy/services.sh preloads it"
}

usage() {
    sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

case ${1:-} in
    install) cmd_install ;;
    status) cmd_status ;;
    source) cmd_source "${2:-}" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
