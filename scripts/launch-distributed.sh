#!/usr/bin/env bash
# Trains the example (examples/mnist) data-parallel: N ranks on this machine, over loopback.
#   scripts/launch-distributed.sh N [mnist arguments]     e.g. 2 --epochs 1 --model mlp
# Builds the example (as run-example.sh), picks a free port on 127.0.0.1 and starts ranks 0 to
# N-1 with --world-size N --rank r --master-addr 127.0.0.1 --master-port PORT and the
# arguments. Rank 0 prints to the terminal (the table, the progress); rank r > 0 writes to
# <out>/rank<r>.log (<out>: the --out given, default result). If a rank fails, the others are
# stopped and the script exits with that rank's status; Ctrl-C or TERM stops every rank. Run it
# again to continue from the last snapshot (with the same N). The batch is per rank: the job's
# batch is N x --batch-size.
# TTH_MNIST_BINARY=path skips the build and runs that binary (the tests do).
#
# Across machines, start the same binary once per machine, one rank each:
#   mnist --world-size N --rank r --master-addr HOST0 --master-port 29500 [arguments]
# HOST0 is rank 0's host, and the port one that every machine can reach (rank 0 listens there);
# the ranks then connect to each other over TCP (Gloo): GLOO_SOCKET_IFNAME=eth0 picks the
# network interface to use. Give each machine the same --data, and an --out that they share
# (rank 0 writes it; every rank resumes from its snapshots) or a copy of it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N [mnist arguments]   (N: the number of ranks, >= 1)" >&2
  exit 2
fi
world_size=$1
shift
binary=${TTH_MNIST_BINARY:-}
if [[ -z $binary ]]; then
  scripts/build.sh --target mnist
  binary=${BUILD_DIR:-build}/examples/mnist/mnist
fi

# The output directory of the arguments, for the logs of ranks > 0.
out=result
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --out) out=${args[i + 1]:-$out} ;;
    --out=*) out=${args[i]#--out=} ;;
  esac
done
mkdir -p "$out"

# A port that is free now: the kernel's pick for port 0.
port=$(/usr/bin/python3 -c \
  'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

declare -A rank_of  # pid -> rank, of the ranks still running
stop_all() {
  for pid in "${!rank_of[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

for ((rank = 0; rank < world_size; rank++)); do
  command=("$binary" --world-size "$world_size" --rank "$rank" --master-addr 127.0.0.1
    --master-port "$port" "$@")
  if ((rank == 0)); then
    "${command[@]}" &
  else
    "${command[@]}" >"$out/rank$rank.log" 2>&1 &
  fi
  rank_of[$!]=$rank
done

# Wait for every rank; the first that fails stops the others.
while ((${#rank_of[@]} > 0)); do
  status=0
  wait -n -p finished "${!rank_of[@]}" || status=$?
  rank=${rank_of[$finished]}
  unset "rank_of[$finished]"
  if ((status != 0)); then
    echo "launch-distributed: rank $rank exited with status $status; stopping the others" \
      "(the log of rank r > 0: $out/rank<r>.log)" >&2
    stop_all
    exit "$status"
  fi
done
