# shellcheck shell=bash
# Installs what the tests need when it is missing: Debian packages (apt-get, only when something is missing), the
# npm packages of package.json (npm ci, only when package.json or the lock changed since the last install) and a
# Python venv with the pinned packages of scripts/requirements-test.txt (only when that file changed). Idempotent:
# a second run installs nothing. Sourced by scripts/test, never run.

# The newest PostgreSQL server bin directory, or nothing.
pg_bindir() {
    local d
    # shellcheck disable=SC2012
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

# Debian packages the tests need, as "check:package" pairs: a check is a command name on PATH, an absolute path,
# or a function name prefixed with "fn=".
DEBIAN_NEEDS=(
    /usr/bin/chromium:chromium
    ffmpeg:ffmpeg
    ffprobe:ffmpeg
    fn=pg_bindir:postgresql
    psql:postgresql-client
    createdb:postgresql-client
    curl:curl
    node:nodejs
    npm:npm
    python3:python3
    fn=python_has_venv:python3-venv
    make:make
    g++:g++
    fn=can_switch_user:util-linux
    systemd-analyze:systemd
)

# As root, postgres runs under another user through runuser; as anyone else it runs as ourselves.
can_switch_user() { ((EUID != 0)) || command -v runuser >/dev/null 2>&1; }
python_has_venv() { python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }

missing_debian_packages() {
    local entry check pkg missing=()
    for entry in "${DEBIAN_NEEDS[@]}"; do
        check=${entry%:*}
        pkg=${entry##*:}
        case $check in
        fn=*) "${check#fn=}" >/dev/null 2>&1 && continue ;;
        /*) [[ -x $check ]] && continue ;;
        *) command -v "$check" >/dev/null 2>&1 && continue ;;
        esac
        [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    done
    printf '%s\n' "${missing[@]}"
}

install_debian_packages() {
    local missing
    mapfile -t missing < <(missing_debian_packages | sed '/^$/d')
    if ((${#missing[@]} == 0)); then
        echo "all Debian packages present"
        return 0
    fi
    echo "missing: ${missing[*]}"
    if ((EUID != 0)) && ! command -v sudo >/dev/null 2>&1; then
        echo "scripts/test needs these Debian packages: ${missing[*]}" >&2
        echo "install them as root: apt-get install --no-install-recommends ${missing[*]}" >&2
        return 1
    fi
    # policy-rc.d keeps package scripts from starting services (the postgresql package would start a cluster on
    # port 5432); it is removed again at once. Only created when absent, never overwritten.
    # (cleanup removes it too, should this step be interrupted).
    local policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy"
        echo "$policy" >"$RUN_DIR/made-policy-rc.d"
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
        rc=$?
    remove_policy_rc_d
    if ((rc != 0)); then
        echo "apt-get failed installing: ${missing[*]}" >&2
        return "$rc"
    fi
    local wanted=("${missing[@]}")
    mapfile -t missing < <(missing_debian_packages | sed '/^$/d')
    if ((${#missing[@]} > 0)); then
        echo "still missing after apt-get install: ${missing[*]}" >&2
        return 1
    fi
    note "installed: ${wanted[*]}"
}

remove_policy_rc_d() {
    if [[ -f $RUN_DIR/made-policy-rc.d ]]; then
        as_root rm -f "$(cat "$RUN_DIR/made-policy-rc.d")"
        rm -f "$RUN_DIR/made-policy-rc.d"
    fi
}

# A short hash of files (and extra strings) to tell whether an install is current.
stamp_of() {
    {
        local f
        for f in "$@"; do
            if [[ -f $f ]]; then cat "$f"; else printf '%s\n' "$f"; fi
        done
    } | sha256sum | cut -c1-32
}

install_npm_packages() {
    cd "$REPO" || return
    local stamp_file=node_modules/.zipiq-install-stamp lock=package-lock.json stamp
    stamp=$(stamp_of package.json "$lock" "node $(node --version)" "npm $(npm --version)")
    if [[ -f $stamp_file && $(cat "$stamp_file") == "$stamp" ]]; then
        echo "node_modules is current"
        return 0
    fi
    # Native addons (sqlite3 for arlocal) build from source here: node-gyp must find Node's headers locally, as
    # nothing but the package registries is reachable.
    if [[ -z ${npm_config_nodedir:-} && -f /usr/include/node/node.h ]]; then
        export npm_config_nodedir=/usr
    fi
    local npm_flags=(--no-audit --no-fund --loglevel=error)
    if [[ -f $lock ]]; then
        npm ci "${npm_flags[@]}"
    else
        npm install "${npm_flags[@]}"
    fi
    printf '%s\n' "$stamp" >"$stamp_file"
    note "npm packages installed"
}

VENV_DIR=${ZIPIQ_TEST_VENV:-}
install_python_venv() {
    local req="$REPO/scripts/requirements-test.txt" stamp_file="$VENV_DIR/.zipiq-install-stamp" stamp
    stamp=$(stamp_of "$req" "$(python3 --version 2>&1)")
    if [[ -x $VENV_DIR/bin/python && -f $stamp_file && $(cat "$stamp_file") == "$stamp" ]]; then
        echo "venv is current"
        return 0
    fi
    rm -rf "$VENV_DIR"
    python3 -m venv "$VENV_DIR"
    "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    "$VENV_DIR/bin/python" -m pip check
    printf '%s\n' "$stamp" >"$stamp_file"
    note "venv built"
}

# cargo-nextest when present; plain cargo test otherwise (no download of our own).
have_nextest() { cargo nextest --version >/dev/null 2>&1; }

check_rust_tools() {
    cargo --version
    cargo fmt --version || {
        echo "rustfmt is missing: rustup component add rustfmt" >&2
        return 1
    }
    if [[ ${QUICK:-0} == 0 ]]; then
        cargo clippy --version || {
            echo "clippy is missing: rustup component add clippy" >&2
            return 1
        }
    fi
    if have_nextest; then cargo nextest --version | head -1; else note "cargo-nextest absent: using cargo test"; fi
}
