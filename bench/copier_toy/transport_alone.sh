#!/bin/bash
# usage: CHECKOUT=/work/wt-X TAG=X bench/copier_toy/transport_alone.sh (events: fc-watch --scan-once of the small set, hops removed, in /tmp/copier/ev-nohop.jsonl)
# fc-transport alone on pre-made events: CHECKOUT TAG
W=/tmp/copier/t-$TAG; mkdir -p $W/trash; [ -d $W/dest ] && mv $W/dest $W/trash/d$RANDOM$RANDOM
rm -rf $W/state; mkdir -p $W/state
export FC_STATE_DIR=$W/state PYTHONPATH=$CHECKOUT/lib
/usr/bin/time -f "$TAG %e wall %U user %S sys" /work/main/.venv/bin/python $CHECKOUT/bin/fc-transport --to file://$W/dest < /tmp/copier/ev-nohop.jsonl 2>$W/err >/dev/null; tail -3 $W/err
