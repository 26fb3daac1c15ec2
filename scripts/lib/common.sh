# shellcheck shell=bash
# Shared helpers for scripts/test: quiet steps with logs and timings, privilege handling, free ports, waits, and
# cleanup of exactly the processes this run started. Sourced, never run. Never kills a process by name: only pids
# this run recorded, or processes whose command line or working directory lies inside this run's own temp dir.

# Set by scripts/test before sourcing: REPO (repository root), RUN_DIR (this run's temp dir), LOG_DIR.
STEP_NO=0
STEP_PID=
STEP_RC=0
STEP_LOG=
FAILED_STEPS=()
TIMINGS=()

say() { printf '%s\n' "$*"; }
die() {
    printf 'scripts/test: %s\n' "$*" >&2
    exit 1
}

# Lines of a failing step's log to show: more on CI, where the log file is gone after the run.
tail_lines() { if [[ ${CI:-} == true ]]; then echo 400; else echo 60; fi; }

# step TITLE FUNCTION [ARGS...]: runs FUNCTION in a subshell with errexit, output to its own log file; prints one
# line with the outcome and the time taken. Variables a step exports for later steps go to "$RUN_DIR/env" (see
# export_var), which is sourced after the step. Sets STEP_RC to the step's exit code and STEP_LOG to its log.
#
# Call it (and must/try) only as a plain statement, never in a condition (`if step`, `step || x`, `! step`): bash
# ignores errexit in everything run from a condition, subshells included, so a failing command inside the step
# would not stop it.
step() {
    local title=$1
    shift
    STEP_NO=$((STEP_NO + 1))
    local slug
    slug=$(tr -cs 'A-Za-z0-9' '-' <<<"$title" | sed 's/-$//')
    local log
    log="$LOG_DIR/$(printf '%02d' "$STEP_NO")-$slug.log"
    # shellcheck disable=SC2034 # read by scripts/test
    STEP_LOG=$log
    local start=$SECONDS rc
    printf '%-34s ' "$title"
    # In the background and waited for, so that a signal to this script is handled at once (bash runs traps only
    # between foreground commands), and cleanup can stop the step's whole process tree (STEP_PID).
    set +e
    (
        set -euo pipefail
        "$@"
    ) >"$log" 2>&1 </dev/null &
    STEP_PID=$!
    wait "$STEP_PID"
    rc=$?
    STEP_PID=
    set -e
    local took=$((SECONDS - start))
    TIMINGS+=("$(printf '%-34s %5ss' "$title" "$took")")
    if [[ -f $RUN_DIR/env ]]; then
        # shellcheck disable=SC1091
        source "$RUN_DIR/env"
    fi
    STEP_RC=$rc
    if ((rc == 0)); then
        printf 'ok (%ss)%s\n' "$took" "$(step_note)"
        return 0
    fi
    printf 'FAILED (exit %s, %ss)\n' "$rc" "$took"
    FAILED_STEPS+=("$title")
    say "---- last $(tail_lines) lines of $log ----"
    tail -n "$(tail_lines)" "$log" | sed 's/^/    /'
    say "---- end of $title ----"
    return 0
}

# try TITLE FUNCTION...: a step whose failure is recorded and the run goes on.
try() { step "$@"; }

# must TITLE FUNCTION...: a step the rest of the run needs: on failure, finish (defined by scripts/test) at once.
must() {
    step "$@"
    if ((STEP_RC != 0)); then finish; fi
}

# A step may leave one short note (e.g. "installed: ffmpeg") to print after "ok".
note() { printf '%s' "$*" >"$RUN_DIR/note"; }
step_note() {
    if [[ -s $RUN_DIR/note ]]; then
        printf ' — %s' "$(cat "$RUN_DIR/note")"
        rm -f "$RUN_DIR/note"
    fi
}

# export_var NAME VALUE: exports for the rest of this run (the step runs in a subshell; scripts/test sources the
# file after each step).
export_var() {
    printf 'export %s=%q\n' "$1" "$2" >>"$RUN_DIR/env"
    export "$1=$2"
}

# Record a pid this run started, so cleanup stops it.
track_pid() { printf '%s %s\n' "$1" "$2" >>"$RUN_DIR/pids"; }

# as_root CMD...: runs CMD as root (directly, or with sudo), or fails naming what it needed.
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "need root (or sudo) to run: $*" >&2
        return 1
    fi
}

# free_port [tcp|udp]: prints a port that was free on 127.0.0.1 a moment ago.
free_port() {
    local kind=${1:-tcp}
    python3 - "$kind" <<'EOF'
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# wait_http URL SECONDS [PID]: waits for a 2xx answer; gives up early if PID dies.
wait_http() {
    local url=$1 secs=$2 pid=${3:-}
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            return 0
        fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            echo "process $pid exited while waiting for $url" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "no answer from $url within ${secs}s" >&2
    return 1
}

# Every descendant of a pid, children first.
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

# kill_tree PID: SIGTERM to PID and all its descendants, SIGKILL to what is left after a few seconds.
kill_tree() {
    local pids i p
    pids="$1 $(descendants "$1" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        local any=0
        for p in $pids; do alive "$p" && any=1; done
        ((any)) || return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

# Is pid alive and not a zombie?
alive() { [[ -e /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# stop_pid PID [GRACE_SECONDS]: SIGTERM, wait, then SIGKILL.
stop_pid() {
    local pid=$1 grace=${2:-10} i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Processes whose command line or working directory is inside DIR (this run's unique temp dir): only ours.
pids_under() {
    local dir=$1 p pid
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        ((pid == $$)) && continue
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$dir" ||
            [[ $(readlink "$p/cwd" 2>/dev/null) == "$dir"* ]]; then
            echo "$pid"
        fi
    done
}
