#!/usr/bin/env bash
# Start / stop / check a one-node SLURM cluster on localhost.
#
#   sweeps/slurm/local_cluster.sh start    # install if needed, configure, start, wait for node idle
#   sweeps/slurm/local_cluster.sh stop     # stop the daemons this script started (packages stay)
#   sweeps/slurm/local_cluster.sh status   # exit 0 if the cluster answers and the node is usable
#
# Meant for tests and for trying the sweeps' SLURM path on a laptop or in a
# container (Debian/Ubuntu, no systemd needed: the daemons are started directly).
#
# Environment overrides (all optional):
#   LOCAL_SLURM_NODE     node name                (default: `hostname -s`)
#   LOCAL_SLURM_CPUS     CPUs advertised          (default: `nproc`)
#   LOCAL_SLURM_TIMEOUT  seconds to wait for idle (default: 90)
set -euo pipefail

readonly CONF_DIR=/etc/slurm
readonly CONF=$CONF_DIR/slurm.conf
# A config without this marker belongs to someone else (maybe a real cluster):
# never overwrite it.
readonly MARKER="# Managed by sweeps/slurm/local_cluster.sh -- safe to delete"
readonly CTLD_SPOOL=/var/spool/slurmctld
readonly SLURMD_SPOOL=/var/spool/slurmd
readonly LOG_DIR=/var/log/slurm
readonly RUN_DIR=/run/slurm
readonly CTLD_PID=$RUN_DIR/slurmctld.pid
readonly SLURMD_PID=$RUN_DIR/slurmd.pid
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_PID=/run/munge/munged.pid
# Records which daemons *we* started, so `stop` leaves a pre-existing munged
# (shared with other services) alone. /run is wiped on reboot, as are the daemons.
readonly STATE_DIR=/run/local-slurm-cluster
readonly TIMEOUT=${LOCAL_SLURM_TIMEOUT:-90}

NODE=${LOCAL_SLURM_NODE:-$(hostname -s 2>/dev/null || echo localhost)}
[[ -n $NODE ]] || NODE=localhost

log() { echo "local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- privileges

# start/stop touch /etc, /var and start root daemons. Re-run through sudo rather
# than sprinkling sudo over every command, so behaviour is identical either way.
need_root() {
    [[ $EUID -eq 0 ]] && return 0
    if command -v sudo >/dev/null 2>&1; then
        local self
        self=$(readlink -f "${BASH_SOURCE[0]}")
        log "not root: re-running '$1' via sudo"
        exec sudo --preserve-env=LOCAL_SLURM_NODE,LOCAL_SLURM_CPUS,LOCAL_SLURM_TIMEOUT \
            -- bash "$self" "$@"
    fi
    die "'$1' needs root: it may apt-get install slurm-wlm/munge, writes $CONF and" \
        "starts/stops munged, slurmctld and slurmd. Run it as root, or install and" \
        "configure sudo for user $(id -un)."
}

# ---------------------------------------------------------------- helpers

# Is process $1 running and named $2? The name check matters because pids get
# reused after a crash left a stale pidfile.
proc_running() {
    local pid=$1 name=$2 stat
    # /proc rather than kill -0: status runs unprivileged, and kill -0 on a
    # root/slurm-owned process fails with EPERM there.
    [[ -n $pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    # A dead daemon lingers as a zombie while PID 1 (a container's init
    # stand-in) is slow to reap it; that is not a running daemon.
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != [ZX] ]]
}

pidfile_pid() { [[ -r $1 ]] && tr -dc '0-9' <"$1"; }

# Is the daemon whose pidfile is $1 running and named $2?
pid_alive() {
    proc_running "$(pidfile_pid "$1" || true)" "$2"
}

# Node state as sinfo reports it, lower case -- "" if slurmctld does not answer.
# sinfo's suffixes are kept on purpose ("idle*" = slurmd not responding), so
# such states never count as usable below.
node_state() {
    local s
    s=$(timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1) || return 0
    echo "${s,,}"
}

node_usable() {
    case $(node_state) in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

# ---------------------------------------------------------------- install

install_packages() {
    local missing=()
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    for b in slurmctld slurmd sinfo; do
        command -v "$b" >/dev/null 2>&1 || { missing+=(slurm-wlm); break; }
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "slurm/munge not installed and no apt-get here; install slurm-wlm and munge yourself"
    log "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    # Non-interactive: postinst would otherwise ask questions when run from tests.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- config

render_config() {
    local cpus mem_mb
    cpus=${LOCAL_SLURM_CPUS:-$(nproc)}
    # RealMemory must not exceed what slurmd measures, or the node is drained
    # ("Low RealMemory"); leave ~5% headroom for the OS and the daemons.
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)
    cat <<EOF
$MARKER
# Regenerated on every 'start' (CPU count, memory and hostname may change).
ClusterName=local
# Explicit address: the short hostname need not resolve (containers, laptops).
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CryptoType=crypto/munge
# cred_expire also delays the restart of a requeued job (default 120 s);
# 10 s keeps requeue tests quick while still covering a slow job launch.
AuthInfo=cred_expire=10
# No mail on this box; the default /usr/bin/mail is absent and logs errors.
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none

StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups: they are unavailable or read-only in most containers.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none

# No accounting database (sacct will not work; squeue/scontrol do).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Memory is sampled every second, and a job above its --mem is killed: SLURM
# reports it OUT_OF_MEMORY, as a cluster with cgroups would.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill

# Per-CPU allocation so several 1-CPU jobs share the node. Memory is a
# consumable resource too (it must be, for a job's --mem to be enforced); a job
# without --mem gets its CPUs' share of the node's memory.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((mem_mb / cpus))

# Quick turnaround for tests: schedule often, kill fast, keep finished jobs
# visible in squeue/scontrol for 5 minutes (MinJobAge), allow requeue.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MaxJobCount=10000
MinJobAge=300
KillWait=5
JobRequeue=1
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
# A node that went down only because it was unreachable comes back by itself.
ReturnToService=2
# Trust this file over slurmd's hardware probe (virtualised CPUs, LOCAL_SLURM_CPUS).
SlurmdParameters=config_overrides

NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# $1: what we refuse to do, for the message.
refuse_foreign_config() {
    if [[ -e $CONF ]] && ! grep -qxF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script (it may belong to a real" \
            "cluster); refusing to $1. Move it aside to use the local cluster."
    fi
}

# Writes the config; returns 0 if it changed (daemons then need a restart).
write_config() {
    refuse_foreign_config "overwrite it"
    mkdir -p "$CONF_DIR"
    local new
    new=$(render_config)
    if [[ -e $CONF ]] && [[ $(<"$CONF") == "$new" ]]; then
        return 1
    fi
    printf '%s\n' "$new" >"$CONF.tmp"
    chmod 0644 "$CONF.tmp"
    mv -f "$CONF.tmp" "$CONF"
    log "wrote $CONF (node $NODE)"
    return 0
}

# ---------------------------------------------------------------- daemons

ensure_users_and_dirs() {
    # The Debian packages create these users; make sure anyway (e.g. a manual install).
    id munge >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin munge
    id slurm >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin slurm

    # slurmctld drops to SlurmUser before touching its state/log/pid files, so
    # these must belong to slurm. /run is a tmpfs: recreate after every reboot.
    mkdir -p "$CTLD_SPOOL" "$SLURMD_SPOOL" "$LOG_DIR" "$RUN_DIR" "$STATE_DIR"
    chown slurm:slurm "$CTLD_SPOOL" "$LOG_DIR" "$RUN_DIR"
    chmod 0755 "$CTLD_SPOOL" "$LOG_DIR" "$RUN_DIR"
    # munged refuses to start if its dirs are group/world-writable or not its own.
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    chown munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
}

start_munge() {
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating munge key $MUNGE_KEY"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"

    if pid_alive "$MUNGE_PID" munged; then
        return 0
    fi
    log "starting munged"
    # munged must not run as root; it daemonizes itself. Redirect stdio so a
    # caller capturing our output (subprocess.run) is not kept waiting by it.
    runuser -u munge -- munged --force </dev/null >>"$LOG_DIR/munged.stderr" 2>&1 ||
        die "munged failed to start; see /var/log/munge/munged.log and $LOG_DIR/munged.stderr"
    touch "$STATE_DIR/munged"
    local i
    for ((i = 0; i < 20; i++)); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "munged started but munge -n | unmunge fails; see /var/log/munge/munged.log"
}

start_slurmctld() {
    pid_alive "$CTLD_PID" slurmctld && return 0
    log "starting slurmctld"
    slurmctld </dev/null >>"$LOG_DIR/slurmctld.stderr" 2>&1 ||
        die "slurmctld failed; see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmctld.stderr"
    touch "$STATE_DIR/slurmctld"
    local i
    for ((i = 0; i < 60; i++)); do
        timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' && return 0
        sleep 0.5
    done
    die "slurmctld does not answer 'scontrol ping'; see $LOG_DIR/slurmctld.log"
}

start_slurmd() {
    pid_alive "$SLURMD_PID" slurmd && return 0
    log "starting slurmd"
    # -N: the node name is in the config; don't rely on gethostname() matching it.
    slurmd -N "$NODE" </dev/null >>"$LOG_DIR/slurmd.stderr" 2>&1 ||
        die "slurmd failed; see $LOG_DIR/slurmd.log and $LOG_DIR/slurmd.stderr"
    touch "$STATE_DIR/slurmd"
}

# SIGTERM the daemon in $1 (named $2) and wait for it to exit.
stop_daemon() {
    local pidfile=$1 name=$2 pid i
    pid=$(pidfile_pid "$pidfile" || true)
    proc_running "$pid" "$name" || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    # Not kill -0: the exited daemon may stay a zombie for seconds (see proc_running).
    for ((i = 0; i < 60; i++)); do
        proc_running "$pid" "$name" || return 0
        sleep 0.5
    done
    log "$name did not exit after 30 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# Wait until the node is idle; a node left down/drained by an earlier run
# (restart, unexpected reboot) is resumed, because here it is only ever ours.
wait_for_node() {
    local deadline=$((SECONDS + TIMEOUT)) state
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            *down* | *drain* | *fail*)
                # '*' suffix = slurmd not yet registered; resuming then is refused.
                if [[ $state != *'*' ]]; then
                    log "node $NODE is '$state'; resuming it"
                    scontrol update nodename="$NODE" state=resume 2>/dev/null || true
                fi
                ;;
        esac
        sleep 1
    done
    die "node $NODE not idle after ${TIMEOUT}s (state '${state:-no answer}');" \
        "see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
}

# ---------------------------------------------------------------- commands

cmd_status() {
    command -v sinfo >/dev/null 2>&1 || { echo "slurm is not installed (no sinfo)"; return 1; }
    # Our own cluster with no slurmctld process: say so at once instead of
    # waiting for squeue's connection retries to time out.
    if [[ -r $CONF ]] && grep -qxF "$MARKER" "$CONF" && ! pid_alive "$CTLD_PID" slurmctld; then
        echo "slurmctld is not running (start it with: $0 start)"
        return 1
    fi
    timeout 10 squeue -h >/dev/null 2>&1 || { echo "slurmctld does not answer (squeue failed)"; return 1; }
    local state
    state=$(node_state)
    [[ -n $state ]] || { echo "node $NODE unknown to slurmctld (sinfo -n $NODE empty)"; return 1; }
    node_usable || { echo "node $NODE is '$state'"; return 1; }
    echo "up: node $NODE is $state"
}

cmd_start() {
    # Fast path: already up with our config -> nothing to do. The pidfile check
    # comes first because sinfo against a dead slurmctld retries for ~10 s.
    if pid_alive "$CTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd &&
        [[ -r $CONF ]] && grep -qxF "$MARKER" "$CONF" && node_usable &&
        [[ $(<"$CONF") == "$(render_config)" ]]; then
        log "already up (node $NODE $(node_state))"
        return 0
    fi
    need_root start "$@"
    # Before installing anything: a foreign config means this is not our box to set up.
    refuse_foreign_config "overwrite it"
    install_packages
    if write_config; then
        # Running daemons hold the old config (e.g. hostname/CPU change): restart them.
        stop_daemon "$SLURMD_PID" slurmd
        stop_daemon "$CTLD_PID" slurmctld
    fi
    ensure_users_and_dirs
    start_munge
    start_slurmctld
    start_slurmd
    wait_for_node
    log "up in ${SECONDS}s: $(timeout 10 sinfo -h -N -n "$NODE" -o '%N %P %T cpus=%c mem=%m')"
}

cmd_stop() {
    need_root stop "$@"
    # Someone else's cluster: its daemons are not ours to stop.
    refuse_foreign_config "stop its daemons"
    # Jobs still running keep their slurmstepd; they are re-adopted on next start.
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    rm -f "$STATE_DIR/slurmd" "$STATE_DIR/slurmctld"
    # Only stop munged if we started it: other services may rely on it.
    if [[ -e $STATE_DIR/munged ]]; then
        stop_daemon "$MUNGE_PID" munged
        rm -f "$STATE_DIR/munged"
    fi
    log "stopped"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
esac
