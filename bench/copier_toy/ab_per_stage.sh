#!/bin/bash
# usage: BASE=/work/wt-X-base MINE=/work/wt-X N=8 OUT=/tmp/ab.txt [SCRIPT=/work/run5-per-stage.sh] bench/copier_toy/ab_per_stage.sh
# interleaved A/B of run3-per-stage: main vs copier, N rounds; prints per-run total wall and sum CPU
N=${N:-6}; OUT=${OUT:-/tmp/copier/ab3.txt}; : > $OUT
for i in $(seq $N); do
  for t in main copier; do
    if [ $t = main ]; then C=${BASE:-/work/main}; else C=${MINE:-/work/wt-copier}; fi
    l=$(uptime | sed 's/.*average: //')
    r=$(CHECKOUT=$C TAG=cp-$t ${SCRIPT:-/work/run3-per-stage.sh} 2>&1)
    wall=$(echo "$r" | grep '^total' | awk '{print $2}')
    cpu=$(echo "$r" | grep _wall_ | sed 's/.*_wall_\([0-9.]*\)_user_\([0-9.]*\)_sys.*/\1 \2/' | awk '{s+=$1+$2} END {print s}')
    tr=$(echo "$r" | grep 'fc-transport' | sed 's/.*:\([0-9.]*\)_wall_\([0-9.]*\)_user_\([0-9.]*\)_sys.*/\2+\3/')
    echo "$t wall $wall cpu3 $cpu transport_cpu $tr load $l" | tee -a $OUT
  done
done
python3 - $OUT <<'P'
import sys, statistics as st, collections
d=collections.defaultdict(lambda: collections.defaultdict(list))
for l in open(sys.argv[1]):
    f=l.split(); t=f[0]; d[t]['wall'].append(float(f[2])); d[t]['cpu'].append(float(f[4])); d[t]['tcpu'].append(eval(f[6]))
for t in d: print(t, {k: round(st.median(v),3) for k,v in d[t].items()}, 'n', len(d[t]['wall']))
P
