#!/usr/bin/env bash
# The baseline: what a seed's deploy.sh does. Replace each container in turn
# with the docker CLI, then poll /ready with curl once a second.
# usage: seed-deploy.sh IMAGE PORT... (EXTRA_ENV="-e K=V", TRIES=N from the environment)
set -u
image=$1
shift
ports=("$@")
for i in "${!ports[@]}"; do
  name="seed-bench-$i"
  docker rm -f "$name" >/dev/null 2>&1
  # shellcheck disable=SC2086
  docker run -d --name "$name" --label xtask.bench=seed -p "127.0.0.1:${ports[$i]}:8080" ${EXTRA_ENV:-} "$image" >/dev/null || exit 1
  ok=0
  for _ in $(seq 1 "${TRIES:-30}"); do
    if curl -sf "http://127.0.0.1:${ports[$i]}/ready" >/dev/null; then ok=1; break; fi
    sleep 1
  done
  if [ "$ok" != 1 ]; then
    echo "health check failed for $name" >&2
    exit 1
  fi
done
