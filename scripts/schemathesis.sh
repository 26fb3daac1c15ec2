#!/usr/bin/env bash
# Property tests of zipIQ's REST API against its own OpenAPI document (/api/v1/openapi.json) with schemathesis:
# no answer is a 5xx, and every answer's status, content type, headers and body match the document; requests the
# document forbids are refused (4xx), and operations that need a token refuse requests without one.
#
#   scripts/schemathesis.sh BASE_URL            e.g. scripts/schemathesis.sh http://127.0.0.1:8080
#
# Environment:
#   SCHEMATHESIS                 the schemathesis command (default: .venv/bin/schemathesis, else schemathesis)
#   ZIPIQ_SCHEMATHESIS_EMAIL     with ZIPIQ_SCHEMATHESIS_PASSWORD: an account (a verified admin exercises every
#   ZIPIQ_SCHEMATHESIS_PASSWORD  operation, e.g. made with `zipiq users create --admin EMAIL --password-stdin`);
#                                the script logs in and runs a second pass with its access token
#   ZIPIQ_SCHEMATHESIS_MAX_TIME  seconds per pass (default 60)
#   ZIPIQ_SCHEMATHESIS_REPORT    a directory for JUnit reports (default: none)
#
# The first pass runs without credentials (every operation; those needing a token must answer 401). The second
# pass, with the token, leaves out POST /api/v1/auth/logout, which would end the token's session. Settings that
# hold for single operations are in scripts/schemathesis.toml. Exit code: 0 when both passes found nothing.
set -euo pipefail

if (($# != 1)); then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
fi
base=${1%/}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
st=${SCHEMATHESIS:-}
if [[ -z $st ]]; then
    if [[ -x $repo/.venv/bin/schemathesis ]]; then st=$repo/.venv/bin/schemathesis; else st=schemathesis; fi
fi
max_time=${ZIPIQ_SCHEMATHESIS_MAX_TIME:-60}
common=(
    --checks all
    # use_after_free (ST301) is left out: a deleted stream's name is free again by design, and the stateful phase
    # can give it to another stream with a rename (PATCH {"name": ...}), which the check does not count as a
    # re-creation, then flag that stream as the deleted one (seen once: its three printed requests answer 404 when
    # replayed). tests/e2e/private_streams.rs checks that GET, PATCH and DELETE of a deleted stream answer 404
    # until the name is taken again.
    --exclude-checks use_after_free
    --max-time "$max_time"
    # One worker: with two, hypothesis' lambda-source cache races between threads under Python 3.11 and
    # schemathesis reports "AST constructor recursion depth mismatch" as an error of the operation it was testing.
    --workers 1
    --request-timeout 10
    --warnings off
    --url "$base"
)

report() { # pass name
    if [[ -n ${ZIPIQ_SCHEMATHESIS_REPORT:-} ]]; then
        mkdir -p "$ZIPIQ_SCHEMATHESIS_REPORT"
        printf -- '--report junit --report-junit-path %s/schemathesis-%s.xml' "$ZIPIQ_SCHEMATHESIS_REPORT" "$1"
    fi
}

status=0
echo "schemathesis: pass 1 of 2, without credentials, against $base"
# shellcheck disable=SC2046
"$st" --config-file "$repo/scripts/schemathesis.toml" run "$base/api/v1/openapi.json" "${common[@]}" \
    $(report anonymous) || status=1

if [[ -n ${ZIPIQ_SCHEMATHESIS_EMAIL:-} && -n ${ZIPIQ_SCHEMATHESIS_PASSWORD:-} ]]; then
    body=$(python3 -c 'import json,sys; print(json.dumps({"email": sys.argv[1], "password": sys.argv[2]}))' \
        "$ZIPIQ_SCHEMATHESIS_EMAIL" "$ZIPIQ_SCHEMATHESIS_PASSWORD")
    answer=$(curl -fsS -X POST -H 'Content-Type: application/json' --data-binary @- "$base/api/v1/auth/login" <<<"$body")
    token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' <<<"$answer")
    echo "schemathesis: pass 2 of 2, as $ZIPIQ_SCHEMATHESIS_EMAIL"
    # shellcheck disable=SC2046
    "$st" --config-file "$repo/scripts/schemathesis.toml" run "$base/api/v1/openapi.json" "${common[@]}" \
        $(report authenticated) \
        -H "Authorization: Bearer $token" \
        --exclude-path /api/v1/auth/logout || status=1
else
    echo "schemathesis: pass 2 skipped (set ZIPIQ_SCHEMATHESIS_EMAIL and ZIPIQ_SCHEMATHESIS_PASSWORD to run it)"
fi
exit "$status"
