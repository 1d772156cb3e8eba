#!/usr/bin/env bash
# Start, stop and describe the private PostgreSQL and MariaDB servers that the
# Django-handler tests use.
#
#   scripts/dbservers.sh start    start both servers (no-op for a running one)
#   scripts/dbservers.sh stop     stop both servers (no-op for a stopped one)
#   scripts/dbservers.sh status   print the state; exit status 0 only when both run
#   scripts/dbservers.sh env      print "export ACMEOPS_PG_*=..." and
#                                 "export ACMEOPS_MYSQL_*=..." lines for eval
#
# The servers are not system services: their data directories, sockets and
# logs live under build/dbservers/ (ACMEOPS_DBSERVERS_DIR overrides it, and
# PostgreSQL's move to /tmp when the user postgres cannot reach it), they
# listen on 127.0.0.1 only (PostgreSQL on port 54329, MariaDB on port 33069)
# and on a unix socket in that directory. The unix sockets let processes in
# another network namespace (the acme2certifier test server runs in one made
# with "unshare -n") reach the servers without leaving the machine.
#
# Each server gets the database a2c owned by the user a2c, the empty database
# a2c_empty, and the user a2c_ro with SELECT only. The user a2c may also create
# databases (on PostgreSQL any, on MariaDB those whose names start with
# "a2c_"), so that parallel pytest workers can each have their own.
#
# Run as root: PostgreSQL then runs as the user postgres (runuser) and MariaDB
# as root. As another user both servers run as that user.
#
# Environment: ACMEOPS_DBSERVERS_DIR (default build/dbservers),
# ACMEOPS_DBSERVERS_TIMEOUT (seconds to wait for start and stop, default 60),
# PG_BINDIR (directory with initdb and pg_ctl, default the newest
# /usr/lib/postgresql/*/bin).
set -euo pipefail
# The PostgreSQL server runs as another user and must be able to search the
# directories that this script creates.
umask 022

cd "$(dirname "$0")/.."

base=${ACMEOPS_DBSERVERS_DIR:-$PWD/build/dbservers}
timeout_seconds=${ACMEOPS_DBSERVERS_TIMEOUT:-60}

pg_port=54329
mysql_port=33069
# Test-only credentials for servers that listen on loopback and local sockets.
a2c_password=a2c-test-password
ro_password=a2c-ro-test-password

mysql_dir=$base/mariadb
mysql_data=$mysql_dir/data
mysql_socket=$mysql_dir/mysqld.sock
mysql_pid_file=$mysql_dir/mysqld.pid
mysql_log=$mysql_dir/mariadb.log
mysql_cnf=$mysql_dir/my.cnf

die() {
    echo "dbservers: error: $*" >&2
    exit 1
}

log() {
    echo "dbservers: $*" >&2
}

# Print the seconds since START, an $EPOCHREALTIME value, with two decimals.
seconds_since() {
    awk -v start="$1" -v now="$EPOCHREALTIME" 'BEGIN { printf "%.2f", now - start }'
}

if [ "$(id -u)" = 0 ]; then
    pg_os_user=postgres
else
    pg_os_user=$(id -un)
fi
# initdb names the superuser after the OS user that runs the server, so peer
# authentication on the unix socket lets that OS user in without a password.
pg_admin=$pg_os_user

# Return success when the user postgres can search the deepest existing
# directory of the path $1 (which needs search permission on every parent).
pg_user_reaches() {
    local directory=$1
    while [ ! -e "$directory" ]; do
        directory=$(dirname "$directory")
    done
    runuser -u "$pg_os_user" -- test -x "$directory"
}

pg_dir=$base/postgresql
# A checkout below a directory that others cannot search (mode 0700, as
# mktemp -d makes) is out of reach for the user postgres. The cluster then
# lives in a directory under /tmp whose name is derived from $base, so that
# every command of this script finds the same one.
if [ "$(id -u)" = 0 ] && command -v runuser > /dev/null && getent passwd "$pg_os_user" > /dev/null \
    && ! pg_user_reaches "$base"; then
    pg_dir=/tmp/acmeops-dbservers-$(printf '%s' "$base" | sha256sum | cut -c1-16)/postgresql
fi
pg_data=$pg_dir/data
pg_socket_dir=$pg_dir/run
pg_log=$pg_dir/postgresql.log

# Run a PostgreSQL program as the user that owns the cluster.
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$pg_os_user" -- "$@"
    else
        "$@"
    fi
}

check_paths() {
    case $base in
        /*) ;;
        *) die "ACMEOPS_DBSERVERS_DIR must be an absolute path, got '$base'" ;;
    esac
    # The path is written into the PostgreSQL and MariaDB configuration files
    # unquoted or in single quotes.
    case $base in
        *[[:space:]\'\"\\]*) die "the data directory path '$base' must not contain spaces, quotes or backslashes; set ACMEOPS_DBSERVERS_DIR" ;;
    esac
    # A unix socket path is limited to 107 bytes on Linux.
    local longest=$pg_socket_dir/.s.PGSQL.$pg_port.lock
    if [ ${#longest} -gt 100 ] || [ ${#mysql_socket} -gt 100 ]; then
        die "the socket paths under '$base' are longer than 100 characters; set ACMEOPS_DBSERVERS_DIR to a shorter path"
    fi
}

find_pg_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        [ -x "$PG_BINDIR/pg_ctl" ] || die "PG_BINDIR=$PG_BINDIR has no executable pg_ctl"
        echo "$PG_BINDIR"
        return
    fi
    # sort -V puts version 15 after 9.6, so the last line is the newest version.
    local candidate newest=''
    while read -r candidate; do
        if [ -x "$candidate/pg_ctl" ] && [ -x "$candidate/initdb" ]; then
            newest=$candidate
        fi
    done < <(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2> /dev/null | sort -V)
    [ -n "$newest" ] || return 1
    echo "$newest"
}

require_binaries() {
    local missing=()
    if ! pg_bindir=$(find_pg_bindir) || [ -z "$pg_bindir" ]; then
        missing+=("PostgreSQL server (initdb and pg_ctl under /usr/lib/postgresql/*/bin; Debian package postgresql, or set PG_BINDIR)")
    fi
    local program
    for program in mariadb-install-db mysqld_safe mariadb mariadb-admin; do
        command -v "$program" > /dev/null || missing+=("$program (Debian package mariadb-server)")
    done
    if [ "$(id -u)" = 0 ]; then
        command -v runuser > /dev/null || missing+=("runuser (Debian package util-linux)")
        getent passwd "$pg_os_user" > /dev/null || missing+=("the OS user $pg_os_user (created by the Debian package postgresql)")
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        local item
        echo "dbservers: error: required server programs are missing:" >&2
        for item in "${missing[@]}"; do
            echo "  - $item" >&2
        done
        exit 1
    fi
}

# Wait until COMMAND... succeeds, at most timeout_seconds, polling every 0.2 s.
wait_for() {
    local description=$1
    shift
    local attempts=$((timeout_seconds * 5)) attempt
    for ((attempt = 0; attempt < attempts; attempt++)); do
        if "$@" > /dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    log "timed out after $timeout_seconds s waiting for $description"
    return 1
}

# ---------------------------------------------------------------------------
# PostgreSQL

pg_running() {
    [ -f "$pg_data/postmaster.pid" ] && as_pg_user "$pg_bindir/pg_ctl" -D "$pg_data" status > /dev/null 2>&1
}

pg_tcp_ready() {
    "$pg_bindir/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -t 2
}

pg_psql() {
    as_pg_user "$pg_bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$pg_socket_dir" -p "$pg_port" -U "$pg_admin" "$@"
}

pg_init() {
    if [ "$pg_dir" != "$base/postgresql" ]; then
        log "the user $pg_os_user cannot reach $base, so the PostgreSQL cluster is in $pg_dir"
        mkdir -p "$(dirname "$pg_dir")"
        # Another user could have made the directory in /tmp first.
        [ "$(stat -c %u "$(dirname "$pg_dir")")" = "$(id -u)" ] \
            || die "$(dirname "$pg_dir") exists but belongs to another user; remove it"
    fi
    mkdir -p "$pg_dir"
    if [ "$(id -u)" = 0 ]; then
        chown "$pg_os_user:" "$pg_dir"
        if ! runuser -u "$pg_os_user" -- test -w "$pg_dir"; then
            die "the user $pg_os_user cannot write to $pg_dir (a parent directory is not searchable by others?); set ACMEOPS_DBSERVERS_DIR to a directory that $pg_os_user can reach"
        fi
    fi
    as_pg_user mkdir -p "$pg_socket_dir"
    if [ -f "$pg_data/PG_VERSION" ]; then
        return
    fi

    log "initializing the PostgreSQL cluster in $pg_data"
    as_pg_user "$pg_bindir/initdb" -D "$pg_data" -U "$pg_admin" -E UTF8 --locale=C \
        --auth-local=peer --auth-host=scram-sha-256 --no-instructions > "$pg_dir/initdb.log" 2>&1 \
        || { cat "$pg_dir/initdb.log" >&2; die "initdb failed; its output is above"; }

    # The superuser logs in by peer authentication on the socket. Every other
    # user needs its password, on the socket and on 127.0.0.1.
    as_pg_user tee "$pg_data/pg_hba.conf" > /dev/null <<EOF
# TYPE  DATABASE  USER          ADDRESS         METHOD
local   all       $pg_admin     peer
local   all       all                           scram-sha-256
host    all       all           127.0.0.1/32    scram-sha-256
EOF
    as_pg_user tee -a "$pg_data/postgresql.conf" > /dev/null <<EOF

# Settings of the acmeops test server (scripts/dbservers.sh).
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pg_socket_dir'
# Test data only: durability is traded for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

pg_bootstrap() {
    pg_psql -d postgres <<EOF
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'a2c') THEN
        CREATE ROLE a2c;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'a2c_ro') THEN
        CREATE ROLE a2c_ro;
    END IF;
END
\$\$;
ALTER ROLE a2c WITH LOGIN CREATEDB PASSWORD '$a2c_password';
ALTER ROLE a2c_ro WITH LOGIN NOCREATEDB PASSWORD '$ro_password';
SELECT 'CREATE DATABASE a2c OWNER a2c' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'a2c') \gexec
SELECT 'CREATE DATABASE a2c_empty OWNER a2c' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'a2c_empty') \gexec
EOF
    local database
    for database in a2c a2c_empty; do
        # Tables that a2c creates later are readable by a2c_ro as well.
        pg_psql -d "$database" <<EOF
GRANT CONNECT ON DATABASE $database TO a2c_ro;
GRANT USAGE ON SCHEMA public TO a2c_ro;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO a2c_ro;
ALTER DEFAULT PRIVILEGES FOR ROLE a2c IN SCHEMA public GRANT SELECT ON TABLES TO a2c_ro;
EOF
    done
}

pg_start() {
    pg_init
    if pg_running; then
        pg_tcp_ready || die "PostgreSQL runs (data directory $pg_data) but does not accept connections on 127.0.0.1:$pg_port, so it was probably started in another network namespace. Run 'scripts/dbservers.sh stop' and start it again here"
        log "PostgreSQL is already running on 127.0.0.1:$pg_port"
    else
        log "starting PostgreSQL on 127.0.0.1:$pg_port (log $pg_log)"
        local started=$EPOCHREALTIME
        if ! as_pg_user "$pg_bindir/pg_ctl" -D "$pg_data" -l "$pg_log" -w -t "$timeout_seconds" start > /dev/null; then
            tail -n 20 "$pg_log" >&2 || true
            die "PostgreSQL did not start within $timeout_seconds s; the end of $pg_log is above"
        fi
        wait_for "PostgreSQL on 127.0.0.1:$pg_port" pg_tcp_ready || die "PostgreSQL started but does not accept connections on 127.0.0.1:$pg_port"
        log "PostgreSQL ready after $(seconds_since "$started") s"
    fi
    pg_bootstrap
}

pg_stop() {
    if [ ! -f "$pg_data/PG_VERSION" ] || ! pg_running; then
        log "PostgreSQL is not running"
        return
    fi
    log "stopping PostgreSQL"
    as_pg_user "$pg_bindir/pg_ctl" -D "$pg_data" -m fast -w -t "$timeout_seconds" stop > /dev/null \
        || die "PostgreSQL did not stop within $timeout_seconds s; see $pg_log"
}

# ---------------------------------------------------------------------------
# MariaDB

mysql_admin() {
    mariadb-admin --defaults-file="$mysql_cnf" --connect-timeout=2 "$@"
}

mysql_pid() {
    [ -f "$mysql_pid_file" ] && cat "$mysql_pid_file"
}

mysql_running() {
    local pid
    pid=$(mysql_pid 2> /dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null
}

mysql_tcp_ready() {
    mariadb-admin --no-defaults --skip-ssl --protocol=TCP -h 127.0.0.1 -P "$mysql_port" --connect-timeout=2 ping
}

mysql_init() {
    mkdir -p "$mysql_dir"
    local server_user
    server_user=$(id -un)
    cat > "$mysql_cnf" <<EOF
# Private MariaDB server of the acmeops tests (scripts/dbservers.sh).
[client]
socket = $mysql_socket
port = $mysql_port

[mysqld]
user = $server_user
datadir = $mysql_data
socket = $mysql_socket
pid-file = $mysql_pid_file
log-error = $mysql_log
bind-address = 127.0.0.1
port = $mysql_port
# Accounts are matched by address, so the server makes no DNS lookups.
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
# Test data only: durability is traded for speed.
innodb_flush_log_at_trx_commit = 0
innodb_buffer_pool_size = 64M
skip-log-bin

[mysqld_safe]
log-error = $mysql_log
pid-file = $mysql_pid_file
EOF
    if [ -d "$mysql_data/mysql" ]; then
        return
    fi
    log "initializing the MariaDB data directory $mysql_data"
    # Socket authentication lets the OS user that runs this script in as the
    # database user of the same name, without a password.
    mariadb-install-db --defaults-file="$mysql_cnf" --auth-root-authentication-method=socket \
        --auth-root-socket-user="$server_user" --skip-test-db > "$mysql_dir/install-db.log" 2>&1 \
        || { cat "$mysql_dir/install-db.log" >&2; die "mariadb-install-db failed; its output is above"; }
}

mysql_bootstrap() {
    local host statements=''
    statements+="CREATE DATABASE IF NOT EXISTS a2c CHARACTER SET utf8mb4;"
    statements+="CREATE DATABASE IF NOT EXISTS a2c_empty CHARACTER SET utf8mb4;"
    # 'localhost' matches connections over the unix socket, '127.0.0.1' those over TCP.
    for host in localhost 127.0.0.1; do
        statements+="CREATE USER IF NOT EXISTS 'a2c'@'$host' IDENTIFIED BY '$a2c_password';"
        statements+="ALTER USER 'a2c'@'$host' IDENTIFIED BY '$a2c_password';"
        statements+="GRANT ALL PRIVILEGES ON \`a2c\`.* TO 'a2c'@'$host';"
        statements+="GRANT ALL PRIVILEGES ON \`a2c\\_%\`.* TO 'a2c'@'$host';"
        statements+="CREATE USER IF NOT EXISTS 'a2c_ro'@'$host' IDENTIFIED BY '$ro_password';"
        statements+="ALTER USER 'a2c_ro'@'$host' IDENTIFIED BY '$ro_password';"
        statements+="GRANT SELECT ON \`a2c\`.* TO 'a2c_ro'@'$host';"
        statements+="GRANT SELECT ON \`a2c\\_%\`.* TO 'a2c_ro'@'$host';"
    done
    mariadb --defaults-file="$mysql_cnf" -e "$statements"
}

mysql_start() {
    mysql_init
    if mysql_running; then
        mysql_tcp_ready > /dev/null 2>&1 || die "MariaDB runs (pid $(mysql_pid)) but does not accept connections on 127.0.0.1:$mysql_port, so it was probably started in another network namespace. Run 'scripts/dbservers.sh stop' and start it again here"
        log "MariaDB is already running on 127.0.0.1:$mysql_port"
    else
        log "starting MariaDB on 127.0.0.1:$mysql_port (log $mysql_log)"
        local started=$EPOCHREALTIME
        # mysqld_safe stays in the foreground, so it runs detached in its own session.
        setsid mysqld_safe --defaults-file="$mysql_cnf" < /dev/null > "$mysql_dir/mysqld_safe.out" 2>&1 &
        if ! wait_for "MariaDB on $mysql_socket" mysql_admin ping; then
            tail -n 20 "$mysql_log" >&2 || true
            die "MariaDB did not start within $timeout_seconds s; the end of $mysql_log is above"
        fi
        wait_for "MariaDB on 127.0.0.1:$mysql_port" mysql_tcp_ready || die "MariaDB started but does not accept connections on 127.0.0.1:$mysql_port"
        log "MariaDB ready after $(seconds_since "$started") s"
    fi
    mysql_bootstrap
}

mysql_stop() {
    if ! mysql_running; then
        log "MariaDB is not running"
        return
    fi
    local pid
    pid=$(mysql_pid)
    log "stopping MariaDB (pid $pid)"
    # mysqld_safe does not restart a server that shut down normally.
    if ! mysql_admin shutdown > /dev/null 2>&1; then
        log "mariadb-admin shutdown failed; sending SIGTERM to pid $pid"
        kill "$pid" 2> /dev/null || true
    fi
    wait_for "MariaDB pid $pid to exit" sh -c "! kill -0 $pid" || die "MariaDB (pid $pid) did not stop within $timeout_seconds s; see $mysql_log"
}

# ---------------------------------------------------------------------------
# Commands

print_env() {
    local name value
    while read -r name value; do
        printf 'export %s=%q\n' "$name" "$value"
    done <<EOF
ACMEOPS_DBSERVERS_DIR $base
ACMEOPS_PG_HOST 127.0.0.1
ACMEOPS_PG_PORT $pg_port
ACMEOPS_PG_SOCKET_DIR $pg_socket_dir
ACMEOPS_PG_USER a2c
ACMEOPS_PG_PASSWORD $a2c_password
ACMEOPS_PG_DB a2c
ACMEOPS_PG_RO_USER a2c_ro
ACMEOPS_PG_RO_PASSWORD $ro_password
ACMEOPS_PG_EMPTY_DB a2c_empty
ACMEOPS_MYSQL_HOST 127.0.0.1
ACMEOPS_MYSQL_PORT $mysql_port
ACMEOPS_MYSQL_SOCKET $mysql_socket
ACMEOPS_MYSQL_USER a2c
ACMEOPS_MYSQL_PASSWORD $a2c_password
ACMEOPS_MYSQL_DB a2c
ACMEOPS_MYSQL_RO_USER a2c_ro
ACMEOPS_MYSQL_RO_PASSWORD $ro_password
ACMEOPS_MYSQL_EMPTY_DB a2c_empty
EOF
}

print_status() {
    local result=0
    if [ -f "$pg_data/PG_VERSION" ] && pg_running; then
        if pg_tcp_ready; then
            echo "postgresql: running on 127.0.0.1:$pg_port and socket directory $pg_socket_dir"
        else
            echo "postgresql: running, socket directory $pg_socket_dir, but not reachable on 127.0.0.1:$pg_port from this network namespace"
            result=3
        fi
    else
        echo "postgresql: stopped"
        result=3
    fi
    if mysql_running; then
        if mysql_tcp_ready > /dev/null 2>&1; then
            echo "mariadb: running (pid $(mysql_pid)) on 127.0.0.1:$mysql_port and socket $mysql_socket"
        else
            echo "mariadb: running (pid $(mysql_pid)), socket $mysql_socket, but not reachable on 127.0.0.1:$mysql_port from this network namespace"
            result=3
        fi
    else
        echo "mariadb: stopped"
        result=3
    fi
    return $result
}

usage() {
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
}

[ $# -eq 1 ] || usage
check_paths
case $1 in
    start)
        require_binaries
        pg_start
        mysql_start
        log "both servers are ready; 'scripts/dbservers.sh env' prints the connection settings"
        ;;
    stop)
        require_binaries
        pg_stop
        mysql_stop
        ;;
    status)
        require_binaries
        print_status
        ;;
    env)
        print_env
        ;;
    *)
        usage
        ;;
esac
