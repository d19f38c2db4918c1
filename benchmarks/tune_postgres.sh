#!/usr/bin/env bash
# One Optuna study, several worker processes, a real PostgreSQL server.
#
#   bash benchmarks/tune_postgres.sh                      # starts a throwaway server
#   bash benchmarks/tune_postgres.sh postgresql+psycopg2://user:pw@host:5432/db   # use yours
#
# Settings by environment: WORKERS (default 2), TRIALS (total, default 8), TASK
# (default matbench_jdft2d), SUBSAMPLE (rows, default 200), STUDY (default pg-demo).
# Workers on other machines join by running benchmarks.tune_worker with the same URL.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-2}
TRIALS=${TRIALS:-8}
TASK=${TASK:-matbench_jdft2d}
SUBSAMPLE=${SUBSAMPLE:-200}
STUDY=${STUDY:-pg-demo-$(date +%s)}

python -c "import psycopg2" 2>/dev/null || python -m pip install --quiet psycopg2-binary

if [ $# -ge 1 ]; then
  URL=$1
else
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$PG_BIN" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  DATA=$(mktemp -d)
  PORT=${PORT:-55432}
  chown postgres "$DATA"
  as_postgres() { runuser -u postgres -- "$@"; }
  as_postgres "$PG_BIN/initdb" -D "$DATA/db" -A trust -U postgres >/dev/null
  as_postgres "$PG_BIN/pg_ctl" -D "$DATA/db" -l "$DATA/log" -w \
    -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1" start >/dev/null
  trap 'as_postgres "$PG_BIN/pg_ctl" -D "$DATA/db" -m fast stop >/dev/null; rm -rf "$DATA"' EXIT
  as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres skgnn
  URL="postgresql+psycopg2://postgres@127.0.0.1:$PORT/skgnn"
  echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT"
fi

# Create the tables and the study once: workers racing to create the schema collide.
python -c "from skgnn.tuning import open_study; open_study('$STUDY', '$URL')"

pids=()
for i in $(seq "$WORKERS"); do
  OMP_NUM_THREADS=1 python -m benchmarks.tune_worker --storage "$URL" --study "$STUDY" \
    --task "$TASK" --n-trials "$TRIALS" --subsample "$SUBSAMPLE" &
  pids+=($!)
done
wait "${pids[@]}"

python - "$URL" "$STUDY" <<'PY'
import sys
from collections import Counter

import optuna

study = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])
by_worker = Counter(t.user_attrs.get("worker") for t in study.trials)
print(f"{len(study.trials)} trials in study {sys.argv[2]}, by worker: {dict(by_worker)}")
print(f"best CV MAE {-study.best_value:.3f} with {study.best_params}")
PY
