#!/usr/bin/env bash
# benchmarks/realapps.py inside the QEMU test bed (Debian's stock 6.12 kernel, DAMON vaddr), one
# boot for all runs: redis with slide on the guest's default tracker, the same beside DAMON's own
# DAMOS pageout (damo), and a control without either. Run from the host:
#
#   .venv/bin/pip install damo          # once, into the venv the guest sees read-only
#   tests/vm/run --mem 4G --timeout 1800 benchmarks/realapps_guest.sh [--keys N] [--duration S]
#       [--modes "etmem-default etmem-damon damo none"]    (the runs to make; all by default)
#       [--hot-fraction F] [--reader c|python]
#
# The reader is the C one by default here: under TCG the Python reader's interpreter costs a third
# of each read's time (docs/performance.md, "The test bed's reader").
#
# Prints one JSON report per run (the lines between "=== name" markers) and a summary at the end.
set -uo pipefail
cd "$(dirname "$0")/.."

KEYS=300000
DURATION=90
MODES="etmem-default etmem-damon damo none"
HOT=0.1
READER=c
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --modes) MODES=$2; shift 2 ;;
        --hot-fraction) HOT=$2; shift 2 ;;
        --reader) READER=$2; shift 2 ;;
        *) echo "realapps_guest: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "${ETMEM_IN_VM:-}" = 1 ] || { echo "realapps_guest: run me through tests/vm/run" >&2; exit 2; }
ip link set lo up 2>/dev/null || true  # the test bed boots with lo down (issue 12, item 6)

PY=.venv/bin/python
OUT=$(mktemp -d /tmp/realapps.XXXXXX)
rc=0
run() {
    local name=$1; shift
    echo "=== $name"
    if "$PY" benchmarks/realapps.py --app redis --keys "$KEYS" --duration "$DURATION" \
        --hot-fraction "$HOT" --reader "$READER" --json "$@" \
        >"$OUT/$name.json"; then
        cat "$OUT/$name.json"
    else
        rc=1
        echo "realapps_guest: $name failed" >&2
    fi
}
for m in $MODES; do
    case "$m" in
        etmem-default) run etmem-default --mode etmem ;;
        etmem-damon) run etmem-damon --mode etmem --tracker damon ;;
        damo) run damo --mode damo ;;
        none) run none --mode none ;;
        *) echo "realapps_guest: unknown mode $m" >&2; rc=2 ;;
    esac
done
for f in "$OUT"/*.json; do
    [ -s "$f" ] || continue
    echo "--- $(basename "$f" .json)"
    "$PY" -c "import json, sys; sys.path.insert(0, 'benchmarks'); import realapps; \
realapps.print_report(json.load(open('$f')))"
done
rm -rf "$OUT"
exit "$rc"
