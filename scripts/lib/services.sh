# shellcheck shell=bash
# Starts the services the tests need, on 127.0.0.1 only, in this run's temp dir, and stops them again:
#   PostgreSQL: reuses ZIPIQ_TEST_PG_URL when it answers, else a throwaway cluster (trust auth on loopback, a
#               superuser role, fsync off) run as an unprivileged user, since postgres refuses to run as root;
#   arlocal:    tests/js/arlocal.mjs (a local Arweave gateway) on a port it picks itself.
# Every process started here is recorded by pid (track_pid) and stopped by stop_services; nothing else is touched.
# Sourced by scripts/test, never run.

PG_ROLE=zipiq
PG_DB=zipiq_test

pg_answers() { PGCONNECT_TIMEOUT=3 psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

# The user that runs initdb and postgres: ourselves when not root; else the postgres system user when it exists,
# else a system user zipiq-test made for this.
pg_run_user() {
    if ((EUID != 0)); then
        id -un
    elif id postgres >/dev/null 2>&1; then
        echo postgres
    else
        if ! id zipiq-test >/dev/null 2>&1; then
            useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin zipiq-test
        fi
        echo zipiq-test
    fi
}

# as_pg_user USER CMD...: runs CMD as USER (no shell, no login) from a directory USER can read.
as_pg_user() {
    local user=$1
    shift
    if [[ $user == "$(id -un)" ]]; then
        "$@"
    else
        runuser -u "$user" -- "$@"
    fi
}

start_postgres() {
    local bindir user dir port attempt replaced=""
    if [[ -n ${ZIPIQ_TEST_PG_URL:-} ]]; then
        if pg_answers "$ZIPIQ_TEST_PG_URL"; then
            echo "using the PostgreSQL server at ZIPIQ_TEST_PG_URL"
            note "reused ZIPIQ_TEST_PG_URL"
            return 0
        fi
        echo "ZIPIQ_TEST_PG_URL is set but does not answer; starting a throwaway cluster instead"
        replaced="ZIPIQ_TEST_PG_URL did not answer: "
    fi
    bindir=$(pg_bindir) || {
        echo "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin" >&2
        return 1
    }
    user=$(pg_run_user)
    dir="$RUN_DIR/pg"
    mkdir -p "$dir/sock"
    chmod 711 "$RUN_DIR"
    chown -R "$user" "$dir"
    cd "$dir" || return
    as_pg_user "$user" "$bindir/initdb" -D "$dir/data" -U "$PG_ROLE" --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
        --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    for attempt in 1 2 3 4 5; do
        port=$(free_port tcp)
        if as_pg_user "$user" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c fsync=off -c synchronous_commit=off \
                -c full_page_writes=off -c max_connections=300 -c log_min_messages=warning" start; then
            break
        fi
        echo "pg_ctl start failed on port $port (attempt $attempt)" >&2
        port=
    done
    [[ -n $port ]] || {
        tail -n 30 "$dir/server.log" >&2
        return 1
    }
    track_pid "$(head -n 1 "$dir/data/postmaster.pid")" postgres
    printf '%s\n%s\n%s\n' "$bindir" "$user" "$dir" >"$RUN_DIR/pg-cluster"
    "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$PG_ROLE" "$PG_DB"
    local url="postgres://$PG_ROLE@127.0.0.1:$port/$PG_DB"
    pg_answers "$url"
    export_var ZIPIQ_TEST_PG_URL "$url"
    note "${replaced}PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

stop_postgres() {
    [[ -f $RUN_DIR/pg-cluster ]] || return 0
    local bindir user dir
    { read -r bindir && read -r user && read -r dir; } <"$RUN_DIR/pg-cluster"
    if [[ -f $dir/data/postmaster.pid ]]; then
        (cd "$dir" && as_pg_user "$user" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 20 stop) >/dev/null 2>&1 ||
            true
    fi
    rm -f "$RUN_DIR/pg-cluster"
}

start_arlocal() {
    local launcher="$REPO/tests/js/arlocal.mjs" log="$RUN_DIR/arlocal.log" pid url="" i
    [[ -f $launcher ]] || {
        echo "missing $launcher" >&2
        return 1
    }
    mkdir -p "$RUN_DIR/arlocal"
    node "$launcher" --port 0 --dir "$RUN_DIR/arlocal" >"$log" 2>&1 &
    pid=$!
    track_pid "$pid" arlocal
    for ((i = 0; i < 600; i++)); do
        url=$(sed -n 's/^ARLOCAL_READY \(http:[^ ]*\).*/\1/p' "$log" | head -n 1)
        [[ -n $url ]] && break
        alive "$pid" || break
        sleep 0.1
    done
    if [[ -z $url ]]; then
        echo "arlocal did not report ready within 60 s; its output:" >&2
        cat "$log" >&2
        return 1
    fi
    wait_http "$url/info" 30 "$pid"
    export_var ZIPIQ_TEST_ARLOCAL "$url"
    note "$url"
}

# Stops every process this run recorded (newest first), then any process still running from inside this run's temp
# dir (a browser or server left behind by a test runner that was killed).
stop_services() {
    stop_postgres
    if [[ -f $RUN_DIR/pids ]]; then
        local pid _name
        while read -r pid _name; do
            stop_pid "$pid" 10
        done < <(tac "$RUN_DIR/pids")
        rm -f "$RUN_DIR/pids"
    fi
    local left
    left=$(pids_under "$RUN_DIR" | tr '\n' ' ')
    if [[ -n ${left// /} ]]; then
        echo "stopping processes left inside $RUN_DIR: $left" >&2
        # shellcheck disable=SC2086
        kill -TERM $left 2>/dev/null || true
        sleep 1
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
    fi
}
