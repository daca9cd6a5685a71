#!/bin/sh
# gunicorn and, where DICOMWEB_DIMSE_BIND is set, the DIMSE listener beside it, sharing one
# metrics directory (so that /metrics counts the listener too); TERM or INT stops both, and the
# script ends with gunicorn's status. Used by `make serve` and the container (deploy/Containerfile).
set -u
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-${TMPDIR:-/tmp}/dicomweb-metrics-$$}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
listener=""
if [ -n "${DICOMWEB_DIMSE_BIND:-}${DICOMWEB_DIMSE_TLS_BIND:-}" ]; then
    dicomweb dimse & listener=$!
fi
gunicorn --config deploy/gunicorn.conf.py --bind "${DICOMWEB_BIND:-127.0.0.1:8080}" wsgi:app & server=$!
trap 'kill -TERM $server $listener 2>/dev/null' TERM INT
status=0
while kill -0 "$server" 2>/dev/null; do
    wait "$server"; status=$?     # a trap interrupts the wait: wait again for gunicorn's own end
done
if [ -n "$listener" ]; then
    kill -TERM "$listener" 2>/dev/null
    wait "$listener"
fi
exit "$status"
