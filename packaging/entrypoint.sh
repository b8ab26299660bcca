#!/bin/sh
# Container entrypoint: `causeway serve` configured by the environment (CAUSEWAY_*, or the seed's
# ADDRESS/PORT/VIEW/REPL_FACTOR), with extra arguments passed through.
#
# A node in a container must listen on every interface and advertise a name its peers resolve,
# so unless the seed's ADDRESS/PORT are given (they imply both), this listens on 0.0.0.0:8080
# and advertises this container's hostname on that port. Set CAUSEWAY_ADVERTISE when peers
# reach the container under another name (docker run --name/--network-alias, a Kubernetes DNS
# name).
set -eu
if [ -z "${ADDRESS:-}${PORT:-}" ]; then
  CAUSEWAY_LISTEN="${CAUSEWAY_LISTEN:-0.0.0.0:8080}"
  CAUSEWAY_ADVERTISE="${CAUSEWAY_ADVERTISE:-$(hostname):${CAUSEWAY_LISTEN##*:}}"
  export CAUSEWAY_LISTEN CAUSEWAY_ADVERTISE
fi
exec causeway serve "$@"
