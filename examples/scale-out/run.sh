#!/usr/bin/env bash
# The scale-out story on one machine, with the real Docker daemon: Prometheus sees an app's load
# pass 0.8 and fires HighLoad, Alertmanager notifies squall's webhook receiver, and the ops pack's
# ops.scale_out workflow scales the app's containers (labelled squall.app=demo) from 2 to 4.
# Then Alertmanager's repeat notification, inside the ops pack's cooldown, changes nothing.
#
# Prometheus, Alertmanager, a tiny HTTP server for the load metric and squall run as plain
# processes on 127.0.0.1, on free ports, with their state in a temp dir (never the packages'
# services). On exit, success, failure or Ctrl-C alike, the script removes everything it started:
# containers, processes, the image if it imported it, the temp dir (KEEP=1 keeps the temp dir).
#
# Needs the Docker daemon, and root or sudo to install what is missing (Debian's prometheus,
# prometheus-alertmanager, busybox-static, jq, curl, python3). squall is built with
# `cargo build --release` unless SQUALL_BIN names a squall binary. Exit code 0 only when the
# app went from 2 to 4 containers and the repeat notification changed nothing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

APP=demo
LABEL_KEY=squall.app
ALERT=HighLoad
IMAGE=squall-demo-busybox:latest
TIMEOUT="${TIMEOUT:-90}"          # seconds to wait for each step of the story

# ---- output ----

bold="" red="" plain=""
if [ -t 1 ]; then bold=$'\033[1m' red=$'\033[31m' plain=$'\033[0m'; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
info() { printf '    %s\n' "$*"; }
explain=()         # a command whose output explains a failure from here on (an execution)
fail() {
  printf '\n%sFAILED: %s%s\n' "$red" "$*" "$plain" >&2
  if [ ${#explain[@]} -gt 0 ]; then show "${explain[@]}" >&2 || true; fi
  exit 1
}
# Seconds since the load went up, e.g. "+3.2s".
t0_ms=0
since() { local ms=$(( $(date +%s%3N) - t0_ms )); printf '+%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }
# Shows a command (squall's path as `squall`, arguments with spaces quoted), then runs it.
show() {
  local a line=""
  for a in "$@"; do
    [ "$a" = "$squall_bin" ] && a=squall
    case "$a" in *" "*) a="'$a'" ;; esac
    line+=" $a"
  done
  printf '    $%s\n' "$line"
  "$@" 2>&1 | sed 's/^/    /'
}

# ---- what the demo needs ----

step "Checking what the demo needs"
missing=()
[ -x /usr/bin/prometheus ] && command -v promtool >/dev/null || missing+=(prometheus)
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
for tool in jq curl python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  info "installing ${missing[*]} (Debian packages; their own services are not used)"
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
docker info >/dev/null 2>&1 || fail "the Docker daemon does not answer (docker info)"

if [ -n "${SQUALL_BIN:-}" ]; then
  squall_bin="$SQUALL_BIN"
else
  info "building squall (cargo build --release --bin squall)"
  (cd "$repo" && cargo build --release --bin squall --quiet)
  target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
  squall_bin="$target_dir/release/squall"
fi
[ -x "$squall_bin" ] || fail "no squall binary at $squall_bin"
info "squall: $squall_bin"

# The ops pack counts every running container labelled squall.app=demo: left-overs would skew it.
leftovers="$(docker ps -aq --filter "label=$LABEL_KEY=$APP")"
if [ -n "$leftovers" ]; then
  fail "containers labelled $LABEL_KEY=$APP exist already; remove them first:
    docker rm -f \$(docker ps -aq --filter label=$LABEL_KEY=$APP)"
fi

# ---- clean-up, whatever happens from here on ----

tmp="$(mktemp -d -t squall-scale-out.XXXXXX)"
run_label="squall.example.run=$(basename "$tmp")"   # on the demo's containers and their copies
pids=()            # name:pid of every process started, in start order
imported_image=""

stop_process() {   # NAME PID: SIGTERM, then SIGKILL after 15 s
  local name=$1 pid=$2 deadline=$((SECONDS + 15))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      echo "    $name ($pid) did not stop: killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT
  trap '' INT TERM   # a second Ctrl-C must not leave half of it behind; every step is bounded
  set +e
  if [ $status -ne 0 ] && [ $status -ne 130 ] && [ $status -ne 143 ]; then   # not on Ctrl-C
    for log in squall alertmanager prometheus; do
      if [ -s "$tmp/$log.log" ]; then
        printf '\n--- last lines of %s.log ---\n' "$log"
        tail -n 25 "$tmp/$log.log"
      fi
    done
  fi
  step "Cleaning up"
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    stop_process "${pids[i]%%:*}" "${pids[i]#*:}"
  done
  local ids
  mapfile -t ids < <(docker ps -aq --filter "label=$run_label")
  if [ ${#ids[@]} -gt 0 ]; then
    docker rm -f "${ids[@]}" >/dev/null
    info "removed ${#ids[@]} containers"
  fi
  if [ -n "$imported_image" ]; then
    docker rmi "$IMAGE" >/dev/null && info "removed the image $IMAGE"
  fi
  if [ "${KEEP:-}" = 1 ]; then
    info "kept $tmp (configs, logs, squall's records)"
  else
    rm -rf "$tmp"
  fi
  info "stopped ${#pids[@]} processes; exit code $status"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the app: 2 containers of a tiny image ----

step "Starting the app: 2 containers labelled $LABEL_KEY=$APP"
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  # No registry here: the image is Debian's static busybox, imported as a root file system.
  mkdir -p "$tmp/rootfs/bin"
  cp /bin/busybox "$tmp/rootfs/bin/busybox"
  ln -s busybox "$tmp/rootfs/bin/sh"
  ln -s busybox "$tmp/rootfs/bin/sleep"
  tar -C "$tmp/rootfs" -cf "$tmp/rootfs.tar" .
  docker import "$tmp/rootfs.tar" "$IMAGE" >/dev/null
  imported_image=1
  info "imported $IMAGE from /bin/busybox"
fi
for i in 1 2; do
  docker run -d --name "$APP-$i" --label "$LABEL_KEY=$APP" --label "$run_label" \
    "$IMAGE" /bin/busybox sleep 3600 >/dev/null
done

running() { docker ps -q --filter "label=$LABEL_KEY=$APP" --filter status=running; }
count_running() { running | wc -l; }
show_app() {
  show docker ps --filter "label=$LABEL_KEY=$APP" --format 'table {{.Names}}\t{{.Image}}\t{{.Status}}'
}
show_app

# ---- configs, ports ----

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
squall_port=$(free_port)
am_port=$(free_port)
prom_port=$(free_port)
load_port=$(free_port)
token="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
api="http://127.0.0.1:$squall_port"

render() {
  sed -e "s/@SQUALL_PORT@/$squall_port/g" -e "s/@ALERTMANAGER_PORT@/$am_port/g" \
    -e "s/@LOAD_PORT@/$load_port/g" -e "s/@TOKEN@/$token/g" "$here/$1" >"$tmp/$1"
}
render prometheus.yml
render alertmanager.yml
render squall.yaml
cp "$here/alerts.yml" "$tmp/alerts.yml"
cp -r "$here/configs" "$tmp/configs"
promtool check config "$tmp/prometheus.yml" >"$tmp/promtool.out" 2>&1 \
  || { cat "$tmp/promtool.out"; fail "promtool rejects prometheus.yml"; }

# ---- services ----

start() {          # NAME COMMAND...: in the background, output to $tmp/NAME.log
  local name=$1; shift
  "$@" >"$tmp/$name.log" 2>&1 &
  pids+=("$name:$!")
}

wait_http() {      # NAME URL: until URL answers 2xx, while the process NAME runs
  local name=$1 url=$2 deadline=$((SECONDS + 30)) pid
  pid="$(printf '%s\n' "${pids[@]}" | sed -n "s/^$name://p")"
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || fail "$name exited (see its log below)"
    [ $SECONDS -lt $deadline ] || fail "$name does not answer $url"
    sleep 0.2
  done
}

set_load() {       # VALUE: what the app's metrics endpoint reports from now on
  mkdir -p "$tmp/www"
  printf '# HELP demo_load Share of the app'"'"'s capacity in use.\n# TYPE demo_load gauge\ndemo_load{app="%s"} %s\n' \
    "$APP" "$1" >"$tmp/www/metrics.txt.new"
  mv "$tmp/www/metrics.txt.new" "$tmp/www/metrics.txt"
}

step "Starting the load metric, squall, Alertmanager and Prometheus on 127.0.0.1"
set_load 0.2
start load python3 -m http.server --bind 127.0.0.1 --directory "$tmp/www" "$load_port"
wait_http load "http://127.0.0.1:$load_port/metrics.txt"
info "load metric  http://127.0.0.1:$load_port/metrics.txt   demo_load{app=\"$APP\"} 0.2"

start squall "$squall_bin" run --packs "$repo/packs" --configs "$tmp/configs" \
  --data-dir "$tmp/squall-data" --listen "127.0.0.1:$squall_port" --config "$tmp/squall.yaml"
wait_http squall "$api/healthz"
info "squall       $api   (packs $repo/packs, configs $tmp/configs)"
curl -fsS "$api/api/v1/actions/ops.scale_out" >/dev/null 2>&1 \
  || fail "squall has no action ops.scale_out: is the ops pack in $repo/packs/ops, and valid?
    $(curl -sS "$api/api/v1/packs" | jq -c '.[] | select(.ref == "ops")' 2>/dev/null)"

start alertmanager /usr/bin/prometheus-alertmanager --config.file="$tmp/alertmanager.yml" \
  --storage.path="$tmp/alertmanager-data" --web.listen-address="127.0.0.1:$am_port" \
  --cluster.listen-address=
wait_http alertmanager "http://127.0.0.1:$am_port/-/ready"
info "Alertmanager http://127.0.0.1:$am_port   (webhook: $api/api/v1/webhooks/alertmanager)"

start prometheus /usr/bin/prometheus --config.file="$tmp/prometheus.yml" \
  --storage.tsdb.path="$tmp/prometheus-data" --web.listen-address="127.0.0.1:$prom_port"
wait_http prometheus "http://127.0.0.1:$prom_port/-/ready"
info "Prometheus   http://127.0.0.1:$prom_port   (alert $ALERT: demo_load > 0.8)"

# ---- polling, each with a deadline ----

all_alive() {      # fails, naming it, when a process the script started has exited
  local p
  for p in "${pids[@]}"; do
    kill -0 "${p#*:}" 2>/dev/null || fail "${p%%:*} exited (see its log below)"
  done
}

wait_until() {     # WHAT CHECK...: runs CHECK until it succeeds, for at most $TIMEOUT s
  local what=$1 deadline=$((SECONDS + TIMEOUT)); shift
  until "$@"; do
    all_alive
    [ $SECONDS -lt $deadline ] || fail "no $what after ${TIMEOUT}s"
    sleep 0.25
  done
}

prom_load() {
  load_now="$(curl -fsS "http://127.0.0.1:$prom_port/api/v1/query?query=demo_load" 2>/dev/null \
    | jq -r --arg app "$APP" '.data.result[] | select(.metric.app == $app) | .value[1]')" \
    && [ -n "$load_now" ]
}
wait_until "demo_load scraped by Prometheus" prom_load
info "Prometheus scrapes demo_load{app=\"$APP\"} = $load_now: no alert"
[ "$(count_running)" -eq 2 ] || fail "expected 2 running containers of $APP"

prom_firing() {
  curl -fsS "http://127.0.0.1:$prom_port/api/v1/alerts" 2>/dev/null \
    | jq -e --arg a "$ALERT" --arg app "$APP" \
      '.data.alerts[] | select(.labels.alertname == $a and .labels.app == $app and .state == "firing")' \
      >/dev/null
}

# The newest firing alertmanager.alert instance for the app other than $1 (which may be empty).
new_instance() {
  instance="$(curl -fsS "$api/api/v1/triggerinstances?trigger=alertmanager.alert" 2>/dev/null \
    | jq -r --arg a "$ALERT" --arg app "$APP" --arg not "$1" \
      '[.[] | select(.payload.status == "firing" and .payload.alertname == $a
                     and .payload.labels.app == $app and .id != $not)][0].id // empty')" \
    && [ -n "$instance" ]
}

# The ops.scale_out execution a rule requested for the trigger instance $1.
execution_for() {
  execution="$(curl -fsS "$api/api/v1/executions?action=ops.scale_out&trigger_instance=$1" 2>/dev/null \
    | jq -r '.[0].id // empty')" && [ -n "$execution" ]
}

final_status=""
ended() {
  final_status="$(curl -fsS "$api/api/v1/executions/$1" 2>/dev/null | jq -r .status)"
  case "$final_status" in
    succeeded | failed | timeout | canceled | abandoned) return 0 ;;
    *) return 1 ;;
  esac
}

four_running() { [ "$(count_running)" -eq 4 ]; }

# ---- the story ----

step "The load rises: demo_load{app=\"$APP\"} 0.95"
t0_ms=$(date +%s%3N)
set_load 0.95
wait_until "firing $ALERT alert in Prometheus" prom_firing
info "$(since)  Prometheus: $ALERT{app=\"$APP\"} is firing; it goes to Alertmanager"
wait_until "alertmanager.alert instance in squall" new_instance ""
first_instance="$instance"
info "$(since)  squall: Alertmanager's notification is trigger instance $first_instance"
curl -fsS "$api/api/v1/triggerinstances/$first_instance" \
  | jq -c '.payload | {status, alertname, labels, annotations}' | sed 's/^/              /'
wait_until "ops.scale_out execution for instance $first_instance" execution_for "$first_instance"
first_execution="$execution"
info "$(since)  rule ops.scale_out_on_alert: execution $first_execution of ops.scale_out"
explain=("$squall_bin" execution get "$first_execution" --api "$api")
wait_until "4 running containers of $APP" four_running
info "$(since)  Docker: 4 containers labelled $LABEL_KEY=$APP are running"
wait_until "end of execution $first_execution" ended "$first_execution"
info "$(since)  ops.scale_out $first_execution: $final_status"
[ "$final_status" = succeeded ] || fail "ops.scale_out ended $final_status"
explain=()

step "The app now"
show_app

step "What squall did"
show "$squall_bin" execution list --action ops.scale_out --api "$api"
show "$squall_bin" execution get "$first_execution" --api "$api"

step "A repeat notification during the cooldown changes nothing"
containers_after="$(running | sort)"
wait_until "repeat notification of $ALERT" new_instance "$first_instance"
repeat_instance="$instance"
info "$(since)  squall: Alertmanager's repeat notification is trigger instance $repeat_instance"
wait_until "ops.scale_out execution for instance $repeat_instance" execution_for "$repeat_instance"
repeat_execution="$execution"
explain=("$squall_bin" execution get "$repeat_execution" --api "$api")
wait_until "end of execution $repeat_execution" ended "$repeat_execution"
info "$(since)  ops.scale_out $repeat_execution: $final_status"
explain=()
show "$squall_bin" execution get "$repeat_execution" --api "$api"
[ "$final_status" = succeeded ] || fail "the repeat's ops.scale_out ended $final_status"
[ "$(running | sort)" = "$containers_after" ] \
  || fail "the repeat notification changed the app's containers"
info "still the same 4 containers"

step "Done: HighLoad fired, squall scaled $APP from 2 to 4 containers, the repeat changed nothing"
