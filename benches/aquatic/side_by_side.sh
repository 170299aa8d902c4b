#!/usr/bin/env bash
# Our index server next to aquatic_udp (a BitTorrent UDP tracker, the fastest public
# server of this kind), in one run, on this machine: each server pinned to core 0 and
# its load generator to core 1, one after the other, the same duration each.
#
# Prints aquatic's responses/s, our acknowledged requests/s (heartbeats only, and the
# mixed workload), and our figures as ratios of aquatic's. Ours go through the
# encrypted channel with signed records; aquatic's are plaintext BitTorrent requests
# (connect, announce, scrape) with no authentication: the ratio says what the security
# costs against the best unauthenticated server, not a like-for-like protocol.
#
#   benches/aquatic/side_by_side.sh [SECONDS]        (default 10)
#
# Needs aquatic_udp and aquatic_udp_load_test on PATH (or AQUATIC_BIN=dir):
#   cargo install aquatic_udp aquatic_udp_load_test
# (`--locked` fails on rustc 1.95: the `metrics` version aquatic_udp 0.9.0 pins does not
# compile; without it the newest compatible versions build), and taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-10}"
bin="${AQUATIC_BIN:-}"
find_tool() {
    if [[ -n "$bin" && -x "$bin/$1" ]]; then echo "$bin/$1"; return; fi
    command -v "$1" || { echo "side_by_side: $1 not found (cargo install $1)" >&2; exit 1; }
}
server="$(find_tool aquatic_udp)"
load="$(find_tool aquatic_udp_load_test)"
command -v taskset >/dev/null || { echo "side_by_side: taskset not found" >&2; exit 1; }
cargo build --release --quiet --bin fileapp --bin fileapp-load

tmp="$(mktemp -d)"
trap 'kill "${apid:-0}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(( 40000 + RANDOM % 20000 ))

# 1. aquatic_udp: one socket worker on core 0, its load test (one worker) on core 1.
"$server" -p > "$tmp/server.toml"
sed -i "s/^address = .*/address = \"127.0.0.1:$port\"/; s/^socket_workers = .*/socket_workers = 1/" "$tmp/server.toml"
"$load" -p > "$tmp/load.toml"
sed -i "s/^server_address = .*/server_address = \"127.0.0.1:$port\"/; s/^duration = .*/duration = $secs/; s/^workers = .*/workers = 1/" "$tmp/load.toml"
taskset -c 0 "$server" -c "$tmp/server.toml" > "$tmp/server.out" 2>&1 &
apid=$!
sleep 1
taskset -c 1 "$load" -c "$tmp/load.toml" > "$tmp/load.out" 2>&1
kill "$apid" 2>/dev/null || true
aquatic=$(awk '/^Average responses per second:/ {print $5}' "$tmp/load.out")
[[ -n "$aquatic" ]] || { echo "side_by_side: no figure in aquatic's output" >&2; cat "$tmp/load.out" >&2; exit 1; }

# 2. fileapp: the server on core 0 (a wrapper pins it; exec keeps its pid for the
#    generator's /proc readings), the generator on core 1.
cat > "$tmp/fileapp-core0" <<WRAP
#!/bin/sh
exec taskset -c 0 "$PWD/target/release/fileapp" "\$@"
WRAP
chmod +x "$tmp/fileapp-core0"
taskset -c 1 target/release/fileapp-load --clients 1000 --duration-secs "$secs" \
    --memory-clients 0 --rounds 20 --server-bin "$tmp/fileapp-core0" --json > "$tmp/ours.json"
read -r hb mixed < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["throughput"]["acked_per_sec"], r["mixed"]["acked_per_sec"])' "$tmp/ours.json")

python3 - "$aquatic" "$hb" "$mixed" "$secs" <<'PY'
import sys
aq, hb, mixed, secs = map(float, sys.argv[1:])
print(f"same run, {secs:.0f} s each, server on core 0, load on core 1")
print(f"  aquatic_udp responses/s                 {aq:12,.0f}")
print(f"  fileapp acked heartbeats/s              {hb:12,.0f}   ratio {hb / aq:.2f}  (target >= 0.9)")
print(f"  fileapp acked requests/s, mixed         {mixed:12,.0f}   ratio {mixed / aq:.2f}  (target >= 0.5)")
PY
