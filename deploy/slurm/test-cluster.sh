#!/usr/bin/env bash
# Single-node Slurm test cluster for tumor-search's tests and CI.
#
# Brings up a REAL Slurm cluster (munged + slurmctld + slurmd) on this machine,
# using Debian's `slurm-wlm` and `munge` packages, with no systemd: the daemons
# are started directly and daemonize themselves. The cluster is one node named
# after `hostname -s` with CPUs=$(nproc), a GRES of two fake "GPUs" (so
# `--gres=gpu:1` is accepted and scheduled; see FAKE_GPU_DIR below), and two
# partitions: `debug` (the default) and `long`.
#
# The configuration goes to the Debian default path /etc/slurm/slurm.conf, so
# plain `sbatch`, `squeue`, `scancel`, `sinfo` and `scontrol` work without any
# environment variable. There is no slurmdbd, hence no `sacct`.
#
# `start` is idempotent: when the daemons run with the current configuration
# and the node is usable it returns at once (well under a second). When the
# configuration this script would write differs from the one on disk, it
# rewrites it and restarts slurmctld and slurmd.
#
# Tested on Debian 12 (Slurm 22.05, munge 0.5.15) as root, 2 cores.
set -euo pipefail

# Daemons and admin tools live in /usr/sbin, which a non-login PATH may lack.
PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"

readonly CONF_DIR=/etc/slurm
readonly SLURM_CONF="${CONF_DIR}/slurm.conf"
readonly GRES_CONF="${CONF_DIR}/gres.conf"
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_RUN_DIR=/run/munge
readonly LOG_DIR=/var/log/slurm
readonly CTLD_SPOOL=/var/spool/slurmctld
readonly SLURMD_SPOOL=/var/spool/slurmd
readonly CTLD_PIDFILE=/run/slurmctld.pid
readonly SLURMD_PIDFILE=/run/slurmd.pid
readonly MUNGED_PIDFILE="${MUNGE_RUN_DIR}/munged.pid"
# Fake GPU device files. Slurm 22.05's gres/gpu plugin silently drops gres.conf
# GPU entries without File= ("Removing file-less GPU gpu:(null) from final GRES
# list"; even with Flags=CountOnly), after which slurmctld marks the node
# INVALID/DRAIN with "gres/gpu count reported lower than configured (0 < 2)".
# So each GPU gets a character device node equal to /dev/null (1,3) here. With
# TaskPlugin=task/none nothing opens or constrains them; Slurm only derives the
# GPU index from the trailing digits, so a job given `--gres=gpu:1` sees
# CUDA_VISIBLE_DEVICES=0 (or 1), as on a real GPU node.
readonly FAKE_GPU_DIR=/var/lib/slurm-test-cluster
# Serialises concurrent `start`/`stop` calls (e.g. two test sessions at once).
readonly LOCK_FILE=/run/slurm-test-cluster.lock

# Tunables (environment overrides, mostly for experiments).
NODE="${SLURM_TEST_NODE:-$(hostname -s)}"
CPUS="${SLURM_TEST_CPUS:-$(nproc)}"
GPUS="${SLURM_TEST_GPUS:-2}"
# Seconds to wait for the node to become usable after starting the daemons.
READY_TIMEOUT="${SLURM_TEST_READY_TIMEOUT:-60}"

usage() {
    cat <<EOF
Usage: ${0##*/} [start|stop|restart|status|-h|--help]

Manage a single-node Slurm test cluster on this machine (root, no systemd).

  start    (default) Install slurm-wlm and munge with apt-get if slurmctld is
           missing, create a munge key if missing, write ${SLURM_CONF} and
           ${GRES_CONF}, start munged, slurmctld and slurmd unless already
           running, and wait until the node is idle (resuming it if it comes
           up drained or down). A no-op, in well under a second, when the
           cluster is already up with the same configuration.
  stop     Stop slurmd, slurmctld and munged (running job steps are left alone).
  restart  stop, then start.
  status   Print sinfo (and whether each daemon runs).

Cluster: node "${NODE}" with CPUs=${CPUS} and Gres=gpu:${GPUS} (fake device nodes
${FAKE_GPU_DIR}/gpuN, no real GPU; a --gres=gpu job gets
CUDA_VISIBLE_DEVICES), partitions "debug" (default) and "long",
SelectTypeParameters=CR_CPU (one CPU per task by default, so ${CPUS} one-CPU
array tasks run at once), no accounting (no sacct).
Config: ${SLURM_CONF}, ${GRES_CONF}.
Logs: ${LOG_DIR}/slurmctld.log, ${LOG_DIR}/slurmd.log.

Environment overrides: SLURM_TEST_NODE, SLURM_TEST_CPUS, SLURM_TEST_GPUS,
SLURM_TEST_READY_TIMEOUT (seconds, default 60).
EOF
}

log() { printf 'test-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_root() {
    [[ ${EUID} -eq 0 ]] || die "must run as root (try: sudo $0 $*)"
}

# Elapsed seconds since $1 (an $EPOCHREALTIME value), two decimals.
elapsed() {
    local start=$1 now=${EPOCHREALTIME}
    awk -v a="${start}" -v b="${now}" 'BEGIN { printf "%.2f", b - a }'
}

# Take an exclusive lock for the rest of the script's life. The lock is held
# through file descriptor 9: every daemon must be started with `9>&-`, or it
# inherits the descriptor and holds the lock for as long as it runs.
take_lock() {
    exec 9>"${LOCK_FILE}"
    flock 9
}

# ---------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------

# slurm-wlm pulls in slurmctld, slurmd, slurm-client and munge; procps gives
# pgrep, which this script uses to find the daemons.
readonly -a PACKAGES=(slurm-wlm munge procps)

install_packages() {
    local t0=${EPOCHREALTIME} apt_log policy=/usr/sbin/policy-rc.d made_policy=0
    apt_log=$(mktemp /tmp/slurm-test-cluster-apt.XXXXXX)
    log "installing slurm-wlm and munge with apt-get (log: ${apt_log})"
    # Keep the packages' maintainer scripts from starting daemons with the
    # default (absent) configuration: policy-rc.d exit code 101 means "action
    # forbidden". Docker-style images already ship one; only add ours if not.
    if [[ ! -e ${policy} ]]; then
        printf '#!/bin/sh\nexit 101\n' >"${policy}"
        chmod 0755 "${policy}"
        made_policy=1
    fi
    local -a apt=(apt-get -y -q -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confold)
    local rc=0
    # Try the existing package lists first (fast); refresh them only on failure.
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends \
        "${PACKAGES[@]}" >>"${apt_log}" 2>&1; then
        log "apt-get install failed with the current package lists; running apt-get update"
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >>"${apt_log}" 2>&1 || rc=$?
        if [[ ${rc} -eq 0 ]]; then
            DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends \
                "${PACKAGES[@]}" >>"${apt_log}" 2>&1 || rc=$?
        fi
    fi
    if [[ ${made_policy} -eq 1 ]]; then
        rm -f "${policy}"
    fi
    if [[ ${rc} -ne 0 ]]; then
        tail -n 30 "${apt_log}" >&2
        die "apt-get failed (exit ${rc}); full log in ${apt_log}"
    fi
    rm -f "${apt_log}"
    log "installed slurm-wlm and munge in $(elapsed "${t0}")s"
}

ensure_installed() {
    local tool
    for tool in slurmctld slurmd sbatch munged pgrep; do
        if ! command -v "${tool}" >/dev/null 2>&1; then
            install_packages
            return
        fi
    done
}

# ---------------------------------------------------------------------------
# Munge key and configuration
# ---------------------------------------------------------------------------

ensure_munge_key() {
    [[ -s ${MUNGE_KEY} ]] && return 0
    log "creating ${MUNGE_KEY}"
    install -d -m 0700 -o munge -g munge "$(dirname "${MUNGE_KEY}")"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="${MUNGE_KEY}"
    else
        dd if=/dev/urandom of="${MUNGE_KEY}" bs=1024 count=1 status=none
    fi
    chown munge:munge "${MUNGE_KEY}"
    chmod 0400 "${MUNGE_KEY}"
}

# RealMemory in MiB: the machine's memory less 5% (at least 256 MiB headroom),
# so that slurmd never finds less memory than configured and drains the node.
real_memory_mb() {
    awk '/^MemTotal:/ {
        mb = int($2 / 1024); spare = int(mb * 0.05); if (spare < 256) spare = 256;
        if (mb - spare < 1) print 1; else print mb - spare; exit }' /proc/meminfo
}

render_slurm_conf() {
    cat <<EOF
# Written by deploy/slurm/test-cluster.sh: single-node Slurm TEST cluster.
# Do not edit by hand; the script rewrites this file when it differs.
ClusterName=tumor-test
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
# Default ports (slurmctld 6817, slurmd 6818).
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${CTLD_SPOOL}
SlurmdSpoolDir=${SLURMD_SPOOL}
SlurmctldPidFile=${CTLD_PIDFILE}
SlurmdPidFile=${SLURMD_PIDFILE}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true

# No cgroups: track processes by parentage, no task binding/containment.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none

SchedulerType=sched/backfill
SelectType=select/cons_tres
# CPUs are the only consumable resource: one-CPU tasks share the node.
SelectTypeParameters=CR_CPU
# Trust this file's node description; don't drain on small hardware mismatches.
SlurmdParameters=config_overrides
# A DOWN node returns to service as soon as slurmd registers with a valid config.
ReturnToService=2

# Short timeouts for tests.
# scancel: SIGTERM, then SIGKILL KillWait seconds later.
KillWait=5
# Finished jobs stay visible to squeue/scontrol for MinJobAge seconds.
MinJobAge=300
# Client/daemon RPC timeout. Also how long clients retry an unreachable
# slurmctld: measured sbatch/scancel/sinfo give up after MessageTimeout-1 s
# (4 s here, 9 s with the default 10), squeue after twice that.
MessageTimeout=5
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0

GresTypes=gpu
NodeName=${NODE} NodeHostname=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=$(real_memory_mb) Gres=gpu:${GPUS} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
PartitionName=long Nodes=${NODE} Default=NO MaxTime=INFINITE State=UP
EOF
}

# gres.conf File= for the fake GPUs: gpu0, or gpu[0-N] for several.
fake_gpu_files() {
    if ((GPUS == 1)); then
        echo "${FAKE_GPU_DIR}/gpu0"
    else
        echo "${FAKE_GPU_DIR}/gpu[0-$((GPUS - 1))]"
    fi
}

render_gres_conf() {
    cat <<EOF
# Written by deploy/slurm/test-cluster.sh: fake GPUs (character devices equal
# to /dev/null; Slurm 22.05's gres/gpu drops GPUs without File=).
NodeName=${NODE} Name=gpu Count=${GPUS} File=$(fake_gpu_files)
EOF
}

# Create the fake GPU device nodes (see FAKE_GPU_DIR). Where mknod is not
# allowed, fall back to empty regular files: slurmd then logs "is not a valid
# character or block device" but still counts them.
ensure_fake_gpus() {
    local i f
    install -d -m 0755 "${FAKE_GPU_DIR}"
    for ((i = 0; i < GPUS; i++)); do
        f="${FAKE_GPU_DIR}/gpu${i}"
        [[ -e ${f} ]] && continue
        mknod -m 0666 "${f}" c 1 3 2>/dev/null || touch "${f}"
    done
}

# The settings in config text: without comments and blank lines.
significant() { grep -v -E '^[[:space:]]*(#|$)' || true; }

# Write $2 (content) to $1 if it differs; return 0 when a setting changed (a
# comment-only change rewrites the file but needs no daemon restart).
write_if_changed() {
    local path=$1 content=$2 old=""
    [[ -f ${path} ]] && old=$(<"${path}")
    [[ ${old} == "${content}" ]] && return 1
    printf '%s\n' "${content}" >"${path}.tmp"
    chmod 0644 "${path}.tmp"
    mv -f "${path}.tmp" "${path}"
    [[ "$(significant <<<"${old}")" != "$(significant <<<"${content}")" ]]
}

# Write both config files; return 0 when a setting in either changed.
write_config() {
    local changed=1
    install -d -m 0755 "${CONF_DIR}"
    if write_if_changed "${SLURM_CONF}" "$(render_slurm_conf)"; then changed=0; fi
    if write_if_changed "${GRES_CONF}" "$(render_gres_conf)"; then changed=0; fi
    return "${changed}"
}

# True when the config on disk is what this script would write (no writes).
config_current() {
    [[ -f ${SLURM_CONF} && -f ${GRES_CONF} ]] &&
        [[ "$(<"${SLURM_CONF}")" == "$(render_slurm_conf)" ]] &&
        [[ "$(<"${GRES_CONF}")" == "$(render_gres_conf)" ]]
}

# ---------------------------------------------------------------------------
# Daemons
# ---------------------------------------------------------------------------

# PIDs of a daemon: from its pid file when that names a live process of the
# right name, else by exact process name.
daemon_pids() {
    local name=$1 pidfile=$2 pid
    # The daemon deletes its pid file as it exits: read it race-free.
    pid=$(cat "${pidfile}" 2>/dev/null || true)
    if [[ -n ${pid} ]]; then
        if [[ ${pid} =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/${pid}/comm" 2>/dev/null)" == "${name}" ]]; then
            echo "${pid}"
            return 0
        fi
    fi
    pgrep -x "${name}"
}

running() { daemon_pids "$1" "$2" >/dev/null; }

all_running() {
    running munged "${MUNGED_PIDFILE}" &&
        running slurmctld "${CTLD_PIDFILE}" &&
        running slurmd "${SLURMD_PIDFILE}"
}

start_munged() {
    running munged "${MUNGED_PIDFILE}" && return 0
    install -d -m 0755 -o munge -g munge "${MUNGE_RUN_DIR}"
    install -d -m 0700 -o munge -g munge /var/log/munge /var/lib/munge
    log "starting munged"
    runuser -u munge -- munged 9>&-
}

start_slurmctld() {
    running slurmctld "${CTLD_PIDFILE}" && return 0
    log "starting slurmctld"
    slurmctld 9>&-
}

start_slurmd() {
    running slurmd "${SLURMD_PIDFILE}" && return 0
    log "starting slurmd"
    slurmd -N "${NODE}" 9>&-
}

# Send SIGTERM to a daemon by PID and wait up to 15 s for it to exit, then
# SIGKILL it.
stop_daemon() {
    local name=$1 pidfile=$2 pids pid i
    pids=$(daemon_pids "${name}" "${pidfile}") || return 0
    log "stopping ${name} (pid ${pids//$'\n'/ })"
    for pid in ${pids}; do kill -TERM "${pid}" 2>/dev/null || true; done
    for ((i = 0; i < 150; i++)); do
        running "${name}" "${pidfile}" || return 0
        sleep 0.1
    done
    log "${name} did not exit after SIGTERM; sending SIGKILL"
    for pid in ${pids}; do kill -KILL "${pid}" 2>/dev/null || true; done
}

# Node state as sinfo prints it (e.g. idle, mixed, drained, down*), or empty.
node_state() {
    sinfo -h -N -n "${NODE}" -o '%T' 2>/dev/null | head -n 1
}

# States in which the node accepts and runs jobs.
state_usable() {
    case $1 in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
    esac
}

# Wait until slurmctld answers and the node is usable; resume it when it is
# drained or down while its slurmd responds. A node that stays INVAL (its slurmd
# registered with resources below slurm.conf's) is a configuration error: fail
# after a few seconds and show why.
wait_ready() {
    local deadline state last_resume=0 now inval_since=-1
    deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        state=$(node_state)
        if state_usable "${state}"; then
            return 0
        fi
        if [[ ${state} == inval* ]]; then
            ((inval_since >= 0)) || inval_since=${SECONDS}
            if ((SECONDS - inval_since >= 5)); then
                scontrol show node "${NODE}" >&2 || true
                die "node ${NODE} registered INVALID (see Reason above and ${LOG_DIR}/slurmd.log)"
            fi
        else
            inval_since=-1
        fi
        case ${state} in
        drain* | down | fail*)
            now=${SECONDS}
            if ((now - last_resume >= 2)); then
                log "node ${NODE} is ${state}; resuming it"
                scontrol update nodename="${NODE}" state=resume >/dev/null 2>&1 || true
                last_resume=${now}
            fi
            ;;
        esac
        sleep 0.2
    done
    sinfo -N -l >&2 || true
    scontrol show node "${NODE}" >&2 || true
    die "node ${NODE} not usable after ${READY_TIMEOUT}s (state '${state:-none}'); see ${LOG_DIR}/"
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

cmd_start() {
    local t0=${EPOCHREALTIME}
    # Fast path: everything installed, running, configured and usable.
    if command -v slurmctld >/dev/null 2>&1 && all_running && config_current &&
        state_usable "$(node_state)"; then
        echo "slurm test cluster already up on ${NODE} ($(elapsed "${t0}")s)"
        return 0
    fi
    take_lock
    ensure_installed
    ensure_munge_key
    install -d -m 0755 "${LOG_DIR}" "${CTLD_SPOOL}" "${SLURMD_SPOOL}"
    ensure_fake_gpus
    if write_config; then
        # New or changed node/partition definitions need both daemons restarted.
        log "wrote ${SLURM_CONF} and ${GRES_CONF}"
        stop_daemon slurmd "${SLURMD_PIDFILE}"
        stop_daemon slurmctld "${CTLD_PIDFILE}"
    fi
    start_munged
    start_slurmctld
    start_slurmd
    wait_ready
    echo "slurm test cluster up on ${NODE} in $(elapsed "${t0}")s (CPUs=${CPUS}, gpu:${GPUS}, partitions debug* long)"
}

cmd_stop() {
    local t0=${EPOCHREALTIME}
    take_lock
    stop_daemon slurmd "${SLURMD_PIDFILE}"
    stop_daemon slurmctld "${CTLD_PIDFILE}"
    stop_daemon munged "${MUNGED_PIDFILE}"
    echo "slurm test cluster stopped on ${NODE} in $(elapsed "${t0}")s"
}

cmd_status() {
    local name pidfile rc=0
    for name in munged slurmctld slurmd; do
        case ${name} in
        munged) pidfile=${MUNGED_PIDFILE} ;;
        slurmctld) pidfile=${CTLD_PIDFILE} ;;
        slurmd) pidfile=${SLURMD_PIDFILE} ;;
        esac
        if running "${name}" "${pidfile}"; then
            echo "${name}: running (pid $(daemon_pids "${name}" "${pidfile}" | tr '\n' ' ' | sed 's/ $//'))"
        else
            echo "${name}: stopped"
            rc=1
        fi
    done
    # sinfo would wait MessageTimeout seconds for a slurmctld that is not there.
    if running slurmctld "${CTLD_PIDFILE}" && command -v sinfo >/dev/null 2>&1; then
        sinfo || rc=1
    fi
    return "${rc}"
}

main() {
    local cmd=${1:-start}
    case ${cmd} in
    -h | --help | help)
        usage
        ;;
    start)
        require_root "$@"
        cmd_start
        ;;
    stop)
        require_root "$@"
        cmd_stop
        ;;
    restart)
        require_root "$@"
        cmd_stop
        cmd_start
        ;;
    status)
        cmd_status
        ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
