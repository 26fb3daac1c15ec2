#!/bin/bash
# The image's HEALTHCHECK: GET /healthz on the HTTP listener must answer 200. The runtime image has no curl, so
# this speaks HTTP/1.0 over bash's /dev/tcp. The address is ZIPIQ_HTTP__LISTEN when set (a wildcard address is
# reached on loopback), else config.toml's default 0.0.0.0:8080; a listener set in a mounted config file only needs
# ZIPIQ_HTTP__LISTEN set to the same value (or the compose file's own healthcheck).
set -euo pipefail
listen=${ZIPIQ_HTTP__LISTEN:-0.0.0.0:8080}
listen=${listen//\"/}
port=${listen##*:}
host=${listen%:*}
host=${host#[}
host=${host%]}
case $host in
"" | 0.0.0.0 | "::") host=127.0.0.1 ;;
esac
exec 3<>"/dev/tcp/$host/$port"
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
IFS= read -r -t 3 status <&3
[[ $status == "HTTP/1."[01]" 200"* ]]
