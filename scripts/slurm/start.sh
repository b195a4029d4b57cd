#!/usr/bin/env bash
# Start a single-node Slurm on this machine for the tests of `imbaseg study --executor slurm`.
#
# Needs Debian's slurm-wlm and munge (installed here when missing and we are root). Everything
# lives under $IMBASEG_SLURM_DIR (default /tmp/imbaseg-slurm): slurm.conf, state, logs, pid files.
# Runs as root with ProctrackType=proctrack/linuxproc and TaskPlugin=task/none (no cgroups needed),
# one node "localhost"-named after this host with all its CPUs. Prints "slurm ready" and writes
# $IMBASEG_SLURM_DIR/env (SLURM_CONF=...) when sinfo answers; exits non-zero with the reason otherwise.
set -euo pipefail
DIR="${IMBASEG_SLURM_DIR:-/tmp/imbaseg-slurm}"
HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {print int($2/1024*0.8)}' /proc/meminfo)"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing slurm-wlm and munge (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  else
    echo "slurm-wlm/munge are not installed and cannot be installed here (need root and apt-get)" >&2
    exit 3
  fi
fi

"$(dirname "$0")/stop.sh" >/dev/null 2>&1 || true
mkdir -p "$DIR"/{state,spool,log,run}
chmod 755 "$DIR"

# munge: a key and a daemon of our own (socket in our folder)
MUNGE_SOCK="$DIR/run/munge.socket"
if [ ! -s "$DIR/munge.key" ]; then
  dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge.key" status=none
fi
chmod 400 "$DIR/munge.key"
mkdir -p "$DIR/munge-log" "$DIR/munge-lib"
munged --force --key-file="$DIR/munge.key" --socket="$MUNGE_SOCK" \
       --pid-file="$DIR/run/munged.pid" --log-file="$DIR/munge-log/munged.log" \
       --seed-file="$DIR/munge-lib/munge.seed"

cat > "$DIR/slurm.conf" <<CONF
ClusterName=imbaseg-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=${IMBASEG_SLURMCTLD_PORT:-6817}
SlurmdPort=${IMBASEG_SLURMD_PORT:-6818}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobRequeue=1
ReturnToService=2
MinJobAge=600
KillWait=30
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
MaxArraySize=10001
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
echo "SLURM_CONF=$DIR/slurm.conf" > "$DIR/env"
export SLURM_CONF="$DIR/slurm.conf"

slurmctld -i -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

for _ in $(seq 1 60); do
  if sinfo -h -o "%T" 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; then
    echo "slurm ready: SLURM_CONF=$SLURM_CONF ($CPUS CPUs, ${MEM_MB} MB on node $HOST)"
    exit 0
  fi
  sleep 1
done
echo "slurm did not come up within 60 s; see $DIR/log/" >&2
sinfo -N -l >&2 || true
tail -20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
exit 4
