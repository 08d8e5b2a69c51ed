#!/usr/bin/env bash
# A two-node Ray cluster on this machine, started with `ray start` as on real machines (a head and one
# more node, one CPU each), with token authentication on: a one-machine trial of the ray executor
# (docs/distributed.md, "By hand") and what its test runs.
#
#   scripts/ray-local-cluster.sh start PORT [DIR]   # the head's GCS on PORT; Ray's files, logs and pids in DIR
#   scripts/ray-local-cluster.sh stop PORT [DIR]    # stops these two nodes, and nothing else
#
# then, in the shell that runs the harness:   export RAY_AUTH_MODE=token
# and in the registry:                        [executor]  name = "ray"  address = "127.0.0.1:PORT"
#
# DIR defaults to ${TMPDIR:-/tmp}/ray-local-cluster-PORT (keep it short: Ray's socket paths inside it
# must stay under 107 characters). RAY is the `ray` command (default: the one on PATH); RAY_LOCAL_CPUS
# the CPUs of each node (default 1).
#
# The token: whatever this shell gives Ray (RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, else
# ~/.ray/auth_token); with none, `ray get-auth-token --generate` writes ~/.ray/auth_token. Both nodes
# run with RAY_AUTH_MODE=token: `ray start --address` never turns authentication on by itself.
#
# Each node runs under `ray start --block` in a session of its own; `stop` sends that process SIGTERM
# (Ray drains the node and stops its processes), then kills what is left of its process group. It
# never runs `ray stop`, which stops every Ray process on the machine, other people's included.
#
# Addresses: Ray replaces 127.0.0.1 given to `ray start` with the machine's own address on Linux (by
# design), so both nodes register under that address and listen on every interface; the token is what
# keeps others out. The harness and `ray start --address` still take 127.0.0.1:PORT.
set -euo pipefail

usage() { echo "usage: $0 start|stop PORT [DIR]" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
port=$2
[[ $port =~ ^[0-9]+$ ]] || usage
dir=${3:-${TMPDIR:-/tmp}/ray-local-cluster-$port}
ray=${RAY:-ray}
cpus=${RAY_LOCAL_CPUS:-1}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_node NAME ARGS...: `ray start ARGS --block` in a new session, logged to DIR/NAME.log; waits until it is up
start_node() {
  local name=$1
  shift
  setsid "$ray" start "$@" --num-cpus="$cpus" --dashboard-agent-listen-port="$(free_port)" --disable-usage-stats --block \
    >"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
  local i
  for i in $(seq 1 240); do
    if grep -qs "Ray runtime started" "$dir/$name.log"; then
      echo "ray-local-cluster: $name up (pid $(cat "$dir/$name.pid"), log $dir/$name.log)"
      return 0
    fi
    if ! alive "$dir/$name.pid"; then
      echo "ray-local-cluster: the $name did not start; the end of $dir/$name.log:" >&2
      tail -n 20 "$dir/$name.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "ray-local-cluster: the $name did not start within 120 s (log: $dir/$name.log)" >&2
  return 1
}

# stop_node NAME: SIGTERM to its `ray start --block` (a graceful stop), then SIGKILL to what is left of its group
stop_node() {
  local pidfile=$dir/$1.pid pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 80); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
  fi
  # its process group (setsid made pid its leader): Ray's processes of this node that outlived it
  if [ -n "$(ps -o pid= -g "$pid" 2>/dev/null)" ]; then
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "ray-local-cluster: $1 stopped"
}

case $cmd in
  start)
    mkdir -p "$dir"
    if alive "$dir/head.pid" || alive "$dir/node.pid"; then
      echo "ray-local-cluster: a cluster started from $dir runs already (stop it first: $0 stop $port $dir)" >&2
      exit 1
    fi
    if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
      if [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then
        [ -s "$RAY_AUTH_TOKEN_PATH" ] || { echo "ray-local-cluster: RAY_AUTH_TOKEN_PATH names $RAY_AUTH_TOKEN_PATH, which is missing or empty" >&2; exit 1; }
      elif [ ! -s "$HOME/.ray/auth_token" ]; then
        "$ray" get-auth-token --generate >/dev/null
      fi
    fi
    export RAY_AUTH_MODE=token
    # a shell variable meant for the test clusters of ray.cluster_utils: it makes `ray start --address` refuse to run
    unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER RAY_ADDRESS
    trap 'stop_node node; stop_node head' ERR
    start_node head --head --port="$port" --temp-dir="$dir/ray" --include-dashboard=false --ray-client-server-port="$(free_port)"
    start_node node --address="127.0.0.1:$port"
    trap - ERR
    echo "ray-local-cluster: two nodes at 127.0.0.1:$port. For the driver: export RAY_AUTH_MODE=token; [executor] address = \"127.0.0.1:$port\""
    ;;
  stop)
    stop_node node
    stop_node head
    ;;
  *) usage ;;
esac
