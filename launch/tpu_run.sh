#!/usr/bin/env bash
# Run one almost_jax job on every worker of a TPU VM pod slice.
#
#   launch/tpu_run.sh --name=almost-v4 --zone=us-central2-b --accelerator=v4-32 \
#       [--version=tpu-ubuntu2204-base] [--project=P] [--spot] [--bucket=gs://b/logs] [--mount=BUCKET] [--dry-run] \
#       -- python -m almost_jax.jobs.train_rm --config=configs/pod/reward_llama1_7b.py --config.train.steps=500
#
# Steps: create the slice unless it exists; copy this checkout to every worker; install the pinned
# dependencies (scripts/setup_env.sh, TPU jax) on every worker; run the command on all workers at
# once (--worker=all; each process calls jax.distributed.initialize() through the job's
# distributed setup and reads only its own data slice); keep one log per worker under
# logs/<name>/. --mount=BUCKET mounts gs://BUCKET at /gcs/BUCKET on every worker with gcsfuse
# (installed if missing), the shared filesystem the configs/pod/ jobs read and write. With
# --dry-run, print the commands instead of running them.
set -euo pipefail

NAME="" ZONE="" ACCEL="" VERSION="tpu-ubuntu2204-base" PROJECT="" SPOT=0 DRY=0 BUCKET="" MOUNT=""
REMOTE_DIR="almost_jax"
JOB=()
while (($#)); do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --accelerator=*) ACCEL="${1#*=}" ;;
    --version=*) VERSION="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --bucket=*) BUCKET="${1#*=}" ;;
    --mount=*) MOUNT="${1#*=}"; MOUNT="${MOUNT#gs://}" ;;
    --spot) SPOT=1 ;;
    --dry-run) DRY=1 ;;
    --) shift; JOB=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "tpu_run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for required in NAME ZONE ACCEL; do
  if [[ -z "${!required}" ]]; then
    echo "tpu_run.sh: --$(echo "$required" | tr '[:upper:]' '[:lower:]' | sed 's/accel/accelerator/') is required" >&2
    exit 2
  fi
done
if ((${#JOB[@]} == 0)); then
  echo "tpu_run.sh: give the job after --, e.g. -- python -m almost_jax.pipeline --config=configs/mini.py" >&2
  exit 2
fi

GCLOUD=(gcloud compute tpus tpu-vm)
COMMON=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project="$PROJECT")

run() {
  if ((DRY)); then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# 1. Create the slice unless it already exists.
exists=0
if ((!DRY)) && "${GCLOUD[@]}" describe "$NAME" "${COMMON[@]}" >/dev/null 2>&1; then
  exists=1
fi
if ((!exists)); then
  create=("${GCLOUD[@]}" create "$NAME" "${COMMON[@]}" --accelerator-type="$ACCEL" --version="$VERSION")
  ((SPOT)) && create+=(--spot)
  run "${create[@]}"
fi

# 2. Sync the code (tracked files only) to every worker.
if ((DRY)); then archive="/tmp/almost_jax.tar.gz"; else archive=$(mktemp -t almost_jax_XXXX.tar.gz); fi
run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$archive" HEAD
run "${GCLOUD[@]}" scp "$archive" "$NAME:/tmp/almost_jax.tar.gz" "${COMMON[@]}" --worker=all
run "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all \
  --command="mkdir -p ~/$REMOTE_DIR && tar -xzf /tmp/almost_jax.tar.gz -C ~/$REMOTE_DIR"

# 3. Install the pinned dependencies on every worker (jax with TPU support).
run "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all \
  --command="cd ~/$REMOTE_DIR && bash scripts/setup_env.sh && .venv/bin/python -m pip install -q 'jax[tpu]==0.10.2'"

# 3b. Mount the bucket where the jobs' paths expect it (/gcs/<bucket>) on every worker.
if [[ -n "$MOUNT" ]]; then
  install_gcsfuse="command -v gcsfuse >/dev/null || { export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s); \
echo \"deb https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list; \
curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -; \
sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }"
  mount_cmd="sudo mkdir -p /gcs/$MOUNT && sudo chown \$(id -u):\$(id -g) /gcs/$MOUNT && \
(mountpoint -q /gcs/$MOUNT || gcsfuse --implicit-dirs $MOUNT /gcs/$MOUNT)"
  run "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command="$install_gcsfuse && $mount_cmd"
fi

# 4. Run the job on all workers at once; one log per worker.
job=$(printf '%q ' "${JOB[@]}")
log_dir="logs/$NAME"
remote="cd ~/$REMOTE_DIR && mkdir -p $log_dir && . .venv/bin/activate && export ALMOST_JAX_DISTRIBUTED=1 && $job 2>&1 | tee $log_dir/worker-\$(hostname).log"
if [[ -n "$BUCKET" ]]; then
  remote+=" ; gsutil cp $log_dir/worker-\$(hostname).log $BUCKET/$NAME/"
fi
run "${GCLOUD[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command="$remote"
