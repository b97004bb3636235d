#!/usr/bin/env python3
"""rtpstreams.py CAP.pcap [--detail] : per-stream RTP report from tshark fields.
Streams keyed by (src port, dst port, SSRC). Reports count, PTs, seq gaps,
timestamp jumps (audio ts delta != the usual), marker bits, arrival gaps > 40 ms,
and RFC 4733 events (event, RTP ts, durations, end packets)."""
import subprocess, sys, collections

cap = sys.argv[1]; detail = "--detail" in sys.argv
fields = ["frame.time_epoch", "udp.srcport", "udp.dstport", "rtp.ssrc", "rtp.seq",
          "rtp.timestamp", "rtp.marker", "rtp.p_type", "rtpevent.event_id",
          "rtpevent.end_of_event", "rtpevent.duration"]
cmd = ["tshark", "-r", cap, "-d", "udp.port==26000-26999,rtp", "-Y", "rtp", "-T", "fields",
       "-E", "separator=,"] + sum([["-e", f] for f in fields], [])
out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
streams = collections.OrderedDict()
for line in out.splitlines():
    v = line.split(",")
    if len(v) < len(fields): continue
    t, sp, dp, ssrc, seq, ts, m, pt, ev, end, dur = v[:11]
    if not seq or not ts or not pt: continue      # not RTP after all (ZRTP, STUN...)
    key = (int(sp), int(dp), ssrc)
    streams.setdefault(key, []).append(dict(t=float(t), seq=int(seq), ts=int(ts),
        m=m in ("1", "True"), pt=int(pt), ev=ev, end=end in ("1", "True"), dur=int(dur) if dur else None))

for (sp, dp, ssrc), pk in streams.items():
    pts = collections.Counter(p["pt"] for p in pk)
    print(f"== {sp} -> {dp} ssrc={ssrc} packets={len(pk)} pt={dict(pts)} "
          f"dur={pk[-1]['t']-pk[0]['t']:.2f}s first_seq={pk[0]['seq']} first_ts={pk[0]['ts']}")
    audio = [p for p in pk if p["pt"] != 101 and p["pt"] < 96 or p["pt"] in (96, 97, 98, 111) and p["ev"] == ""]
    # sequence continuity (all packets of the SSRC, in arrival order)
    gaps = []; retx = 0
    for a, b in zip(pk, pk[1:]):
        d = (b["seq"] - a["seq"]) & 0xffff
        if d == 0 and a["end"] and b["end"] and a["ts"] == b["ts"]:
            retx += 1; continue          # RFC 4733 end packet resent with its own seq (linphone)
        if d != 1: gaps.append((a["seq"], b["seq"], d))
    print(f"   seq gaps/reorders: {len(gaps)} {gaps[:8]}" + (f" (+{retx} end-packet resends, same seq)" if retx else ""))
    # audio timestamp steps
    steps = collections.Counter()
    jumps = []
    aud = [p for p in pk if p["ev"] == ""]
    for a, b in zip(aud, aud[1:]):
        d = (b["ts"] - a["ts"]) & 0xffffffff
        steps[d] += 1
    common = steps.most_common(1)[0][0] if steps else 0
    for a, b in zip(aud, aud[1:]):
        d = (b["ts"] - a["ts"]) & 0xffffffff
        if d != common: jumps.append((a["seq"], b["seq"], d))
    print(f"   audio ts step: usual={common} others={len(jumps)} {jumps[:8]}")
    marks = [(p["seq"], p["pt"], p["ts"]) for p in pk if p["m"]]
    print(f"   marker bits: {len(marks)} {marks[:10]}")
    agaps = [(a["seq"], round((b["t"]-a["t"])*1000)) for a, b in zip(pk, pk[1:]) if b["t"]-a["t"] > 0.040]
    print(f"   arrival gaps >40ms: {len(agaps)} {agaps[:8]}")
    evs = collections.OrderedDict()
    for p in pk:
        if p["ev"] != "":
            e = evs.setdefault((p["ts"], p["ev"]), dict(n=0, ends=0, maxdur=0, first=p["seq"], m=0, t0=p["t"]))
            e["n"] += 1; e["ends"] += p["end"]; e["maxdur"] = max(e["maxdur"], p["dur"] or 0); e["m"] += p["m"]; e["t1"] = p["t"]
    for (ts, ev), e in evs.items():
        print(f"   event {ev:>2} ts={ts} pkts={e['n']} end_pkts={e['ends']} dur={e['maxdur']} "
              f"markers={e['m']} first_seq={e['first']} wall={1000*(e['t1']-e['t0']):.0f}ms")
    if detail and evs:
        first = min(e["first"] for e in evs.values())
        idx = next(i for i, p in enumerate(pk) if p["seq"] == first)
        for p in pk[max(0, idx-3): idx+14]:
            print(f"     t={p['t']:.3f} seq={p['seq']} ts={p['ts']} m={int(p['m'])} pt={p['pt']} ev={p['ev']} end={int(p['end'])} dur={p['dur']}")
