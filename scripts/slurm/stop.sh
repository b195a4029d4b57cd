#!/usr/bin/env bash
# Stop the single-node Slurm started by start.sh (its daemons only; the state folder stays).
DIR="${IMBASEG_SLURM_DIR:-/tmp/imbaseg-slurm}"
for name in slurmd slurmctld munged; do
  pidfile="$DIR/run/$name.pid"
  if [ -s "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  fi
done
echo "slurm stopped"
