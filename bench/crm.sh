#!/usr/bin/env bash
# The CRM API on a big store: N call records (default 100,000; every other one a browser call
# with its context), then look-ups by ANI, Call-ID and session through GET /api/v1/calls with
# a merchant's key, and the merchant's calls in progress. Median of 21 curl timings each.
# Needs: a release build (cargo build --release), python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
BIN=${BIN:-target/release/switchboard}
DIR=$(mktemp -d /tmp/sb-crm-bench.XXXX)
KEY=sbk_bench_key
HASH=$("$BIN" apikey >/dev/null; python3 -c "import hashlib;print('sha256:'+hashlib.sha256(b'$KEY').hexdigest())")
mkdir -p "$DIR/conf/dialplan"
cat > "$DIR/conf/switchboard.toml" <<TOML
[sip]
udp = "127.0.0.1:25060"
[media]
rtp_port_min = 46000
rtp_port_max = 46999
[http]
listen = "127.0.0.1:28080"
token = "bench"
[storage]
path = "$DIR/data.db"
[merchant.acme]
tokenless = true
origins = ["http://127.0.0.1:28080"]
links = ["sales"]
api_keys = ["$HASH"]
TOML
echo '[[extension]]
name = "x"
when.destination = "^x$"
actions = [ { hangup = "USER_BUSY" } ]' > "$DIR/conf/dialplan/x.toml"
start() { "$BIN" --conf "$DIR/conf" > "$DIR/log" 2>&1 & PID=$!; for _ in $(seq 100); do curl -sf http://127.0.0.1:28080/healthz >/dev/null && return; sleep 0.1; done; echo "switch did not start"; cat "$DIR/log"; exit 1; }
start; kill $PID; wait $PID || true    # creates the schema
python3 - "$DIR/data.db" "$N" <<'PY'
import sqlite3, sys, json
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
t0 = 1_790_000_000_000
rows, web = [], []
for i in range(n):
    cid = f"web-{i:08x}" if i % 2 == 0 else f"sip-{i}@bench"
    rows.append((cid, f"b-{i}@switchboard", "web", "sales", "web", "gateway/acd/2000", f"1555{i % 10000:06d}",
                 t0 + i * 1000, t0 + i * 1000 + 300, t0 + i * 1000 + 2000, t0 + i * 1000 + 60000, 58.0,
                 "NORMAL_CLEARING", "NORMAL_CLEARING", "caller", "opus", "PCMU"))
    if i % 2 == 0:
        web.append((cid, "acme", "sales", f"sess-{i}", "https://shop.example/p", "", "198.51.100.7",
                    json.dumps({"trail": ["https://shop.example/"], "cookies": {}, "fields": {}}), t0 + i * 1000))
c.executemany("""INSERT INTO cdr (call_id, b_call_id, caller, destination, context, target, ani, started_ms, ringing_ms,
  answered_ms, ended_ms, billable_secs, cause, b_cause, hangup_side, codec_a, codec_b) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""", rows)
c.executemany("INSERT INTO web_context VALUES (?,?,?,?,?,?,?,?,?)", web)
c.execute("UPDATE cdr SET ended_ms = NULL WHERE id > (SELECT max(id) - 20 FROM cdr)")  # 20 in progress
c.commit()
PY
start
timeit() {
  local what=$1 path=$2
  for _ in $(seq 21); do curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $KEY" "http://127.0.0.1:28080$path"; done |
    sort -n | awk -v w="$what" '{a[NR]=$1} END {printf "%-44s median %.1f ms (min %.1f, max %.1f)\n", w, a[11]*1000, a[1]*1000, a[21]*1000}'
}
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:28080/api/v1/calls?session=sess-$((N / 2))")
echo "records: $N (browser calls: $((N / 2))); session look-up answered $code"
timeit "by ANI (newest of ~$((N / 10000)) with it)" "/api/v1/calls?ani=1555000042"
timeit "by ANI at a time" "/api/v1/calls?ani=1555000042&at=2026-09-23T00:00:00Z"
timeit "by Call-ID (leg B)" "/api/v1/calls?call_id=b-$((N / 2))@switchboard"
timeit "by session" "/api/v1/calls?session=sess-$((N / 2))"
timeit "a SIP call, by Call-ID (404 for a merchant)" "/api/v1/calls?call_id=sip-$((N / 2 + 1))@bench"
timeit "the merchant's calls in progress" "/api/v1/calls"
kill $PID; wait $PID 2>/dev/null || true
rm -rf "$DIR"
