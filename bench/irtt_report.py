"""The report of bench/irtt-compare: reads the work directory it leaves and prints one table per
rate. Arguments: WORK CLK_TCK ROUNDS DURATION RATES SIZE CPUS IRTT_HMAC REV BUILT BIN CAPTURE."""

import glob
import json
import math
import os
import statistics
import struct
import sys

CPU_TARGET = 0.35
IRTT_MAGIC = b"\x14\xa7\x5b"
# irtt header flags: open and close packets are the handshake, not the schedule.
IRTT_OPEN, IRTT_CLOSE = 0x01, 0x04


def read_pcap(path):
    """Yields (time in s, source port, UDP payload) of every IPv4/UDP packet of a pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise SystemExit(f"{path}: not a little-endian pcap file")
    frac = 1e-9 if magic == 0xA1B23C4D else 1e-6
    linktype = struct.unpack("<I", data[20:24])[0]
    l2 = {1: 14, 113: 16, 0: 4}.get(linktype)
    if l2 is None:
        raise SystemExit(f"{path}: link type {linktype} not handled")
    at = 24
    while at + 16 <= len(data):
        sec, sub, incl, _ = struct.unpack("<IIII", data[at:at + 16])
        pkt = data[at + 16:at + 16 + incl]
        at += 16 + incl
        ip = pkt[l2:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 15) * 4:]
        if len(udp) < 8:
            continue
        yield sec + sub * frac, struct.unpack(">H", udp[:2])[0], udp[8:]


def schedule_errors(times, interval_s):
    """Each send's error against its flow's schedule t0 + k*interval, in µs. k is the nearest
    slot; t0 is the median offset, so a constant lag (a timer that always fires 300 µs late)
    is not counted, only the spread around it."""
    if len(times) < 3:
        return []
    first = times[0]
    offs = [t - round((t - first) / interval_s) * interval_s for t in times]
    t0 = statistics.median(offs)
    return [(o - t0) * 1e6 for o in offs]


def send_errors(path, interval_ms, tool):
    """Schedule errors of every data packet in a capture, flows told apart by source port."""
    if not os.path.exists(path):
        return None
    flows = {}
    for t, sport, p in read_pcap(path):
        if tool == "ours":
            # Echo requests only: first byte 0x80, payload type 111 (STUN and QUIC share the port).
            if len(p) < 2 or p[0] != 0x80 or p[1] != 111:
                continue
        else:
            if len(p) < 4 or p[:3] != IRTT_MAGIC or p[3] & (IRTT_OPEN | IRTT_CLOSE):
                continue
        flows.setdefault(sport, []).append(t)
    errs = []
    for times in flows.values():
        errs += schedule_errors(sorted(times), interval_ms / 1e3)
    return errs


def pct(v, p):
    if not v:
        return float("nan")
    s = sorted(v)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def err_summary(errs):
    if not errs:
        return None
    a = [abs(e) for e in errs]
    return dict(n=len(errs), sd=statistics.pstdev(errs), p50=pct(a, 50), p99=pct(a, 99))


def cpu(work, tool, tag, tck):
    t0, t1, load, flows, iv = open(os.path.join(work, f"{tool}-{tag}.cpu")).read().split()
    return (int(t1) - int(t0)) / tck, load, int(flows), float(iv)


def ours(work, tag, tck):
    rep = json.load(open(os.path.join(work, f"ours-{tag}.json")))
    cpu_s, load, flows, iv = cpu(work, "ours", tag, tck)
    if "sessions" in rep:  # load mode's summary
        sent, echoed, rtt = rep["sent"], rep["received"], rep["rtt_p50_ms"]
        if rep.get("errors") or rep.get("refused"):
            print(f"  note: {tag}: {rep['errors']} of our sessions could not run, {rep['refused']} refused")
    else:
        echo = (rep.get("udp") or {}).get("echo") or {}
        sent, echoed = echo.get("sent", 0), echo.get("received", 0)
        rtt = (echo.get("rtt_ms") or {}).get("p50")
    if not echoed:
        sys.exit(f"{tag}: probe-client echoed nothing: {json.dumps(rep.get('findings'))}")
    errs = send_errors(os.path.join(work, f"ours-{tag}.pcap"), iv, "ours")
    return dict(sent=sent, echoed=echoed, rtt=rtt, cpu_s=cpu_s, load=load, flows=flows, iv=iv, errs=errs)


def irtt(work, tag, tck):
    cpu_s, load, flows, iv = cpu(work, "irtt", tag, tck)
    reps = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, f"irtt-{tag}-*.json")))]
    if len(reps) != flows or not all(r["stats"].get("packets_received") for r in reps):
        sys.exit(f"{tag}: an irtt client echoed nothing")
    st = [r["stats"] for r in reps]
    # irtt subtracts its server's receive-to-send time from the RTT; the raw client-side round
    # trip (monotonic receive - send) is printed beside it for a like-for-like look.
    raw = []
    for r in reps:
        v = sorted(
            (x["timestamps"]["client"]["receive"]["monotonic"] - x["timestamps"]["client"]["send"]["monotonic"]) / 1e6
            for x in r.get("round_trips", [])
            if x.get("lost") == "false" and "receive" in x["timestamps"]["client"]
        )
        if v:
            raw.append(statistics.median_low(v))
    errs = send_errors(os.path.join(work, f"irtt-{tag}.pcap"), iv, "irtt")
    return dict(
        sent=sum(s["packets_sent"] for s in st), echoed=sum(s["packets_received"] for s in st),
        rtt=statistics.median(s["rtt"]["median"] / 1e6 for s in st),
        raw=statistics.median(raw) if raw else float("nan"), cpu_s=cpu_s, load=load, flows=flows, iv=iv,
        proc_us=statistics.mean(s.get("server_processing_time", {}).get("mean", float("nan")) / 1e3 for s in st),
        own_timer=(statistics.mean(s["timer_error"]["mean"] / 1e3 for s in st),
                   statistics.mean(s["timer_error"]["stddev"] / 1e3 for s in st)),
        errs=errs)


def per_pkt(r):
    return r["cpu_s"] / r["echoed"] * 1e6


def ratio(a, b):
    return a / b if b else float("inf")


def verdict(ok):
    return "PASS" if ok else "MISS"


def report_rate(work, tck, rounds, rate):
    tags = [f"{rate}-{n}" for n in range(1, rounds + 1)]
    O = [ours(work, t, tck) for t in tags]
    I = [irtt(work, t, tck) for t in tags]
    flows, iv = O[0]["flows"], O[0]["iv"]
    print(f"\n{rate} packets/s: {flows} flow(s) at {iv:g} ms per tool")
    if rounds > 1:
        print(f"  {'round':>5} {'echoed o/i':>15} {'RTT ms o/i':>13} {'ratio':>6} {'CPU us/pkt o/i':>15} {'ratio':>6}  load o/i")
        for n, (o, i) in enumerate(zip(O, I), 1):
            print(f"  {n:>5} {o['echoed']:>7}/{i['echoed']:<7} {o['rtt']:>6.3f}/{i['rtt']:<6.3f}"
                  f" {ratio(o['rtt'], i['rtt']):>6.2f} {per_pkt(o):>7.1f}/{per_pkt(i):<7.1f}"
                  f" {ratio(per_pkt(o), per_pkt(i)):>6.2f}  {o['load']}/{i['load']}")
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    o_sent, i_sent = sum(r["sent"] for r in O), sum(r["sent"] for r in I)
    o_echo, i_echo = sum(r["echoed"] for r in O), sum(r["echoed"] for r in I)
    o_rtt, i_rtt, i_raw = med(O, "rtt"), med(I, "rtt"), med(I, "raw")
    o_cpu_s, i_cpu_s = sum(r["cpu_s"] for r in O), sum(r["cpu_s"] for r in I)
    o_cpu, i_cpu = o_cpu_s / o_echo * 1e6, i_cpu_s / i_echo * 1e6
    r_rtt, r_raw, r_cpu = ratio(o_rtt, i_rtt), ratio(o_rtt, i_raw), ratio(o_cpu, i_cpu)
    print(f"  {'':36}{'ours':>10}{'irtt':>10}{'ours/irtt':>11}   target")
    print(f"  {'packets sent':36}{o_sent:>10}{i_sent:>10}")
    print(f"  {'packets echoed':36}{o_echo:>10}{i_echo:>10}")
    print(f"  {'median RTT (ms)':36}{o_rtt:>10.3f}{i_rtt:>10.3f}{r_rtt:>11.2f}   ours <= irtt: {verdict(r_rtt <= 1)}")
    print(f"  {'  irtt with its server time in':36}{o_rtt:>10.3f}{i_raw:>10.3f}{r_raw:>11.2f}   (like-for-like, info only)")
    print(f"  {'server CPU, utime+stime (s)':36}{o_cpu_s:>10.2f}{i_cpu_s:>10.2f}")
    print(f"  {'server CPU per echoed packet (us)':36}{o_cpu:>10.2f}{i_cpu:>10.2f}{r_cpu:>11.2f}   "
          f"ours <= {CPU_TARGET} x irtt: {verdict(r_cpu <= CPU_TARGET)}")
    o_err = err_summary([e for r in O for e in (r["errs"] or [])])
    i_err = err_summary([e for r in I for e in (r["errs"] or [])])
    if o_err and i_err:
        r_sd = ratio(o_err["sd"], i_err["sd"])
        print(f"  {'send error std-dev (us, capture)':36}{o_err['sd']:>10.1f}{i_err['sd']:>10.1f}{r_sd:>11.2f}   "
              f"ours <= irtt: {verdict(r_sd <= 1)}")
        print(f"  {'send error |p50| / |p99| (us)':36}{o_err['p50']:>5.0f}/{o_err['p99']:<4.0f}"
              f"{i_err['p50']:>5.0f}/{i_err['p99']:<4.0f}{'':11}   "
              f"p99 ours <= irtt: {verdict(o_err['p99'] <= i_err['p99'])}")
        print(f"  {'sends captured':36}{o_err['n']:>10}{i_err['n']:>10}")
    else:
        print("  send error: no capture")
    ot = statistics.mean(r["own_timer"][0] for r in I), statistics.mean(r["own_timer"][1] for r in I)
    print(f"  irtt's own timer_error: mean {ot[0]:.1f} us, stddev {ot[1]:.1f} us (its sleep vs its target, info only)")
    print(f"  irtt's mean server processing time {statistics.mean(r['proc_us'] for r in I):.1f} us is subtracted "
          f"from its RTT; 1-min load average at the start of each run: ours {' '.join(r['load'] for r in O)}, "
          f"irtt {' '.join(r['load'] for r in I)}")
    print(f"  One CPU tick is {1e6 / tck / max(min(o_echo, i_echo), 1):.2f} us/packet here.")
    if abs(o_sent - i_sent) > 0.05 * max(o_sent, i_sent):
        print("  note: the tools sent more than 5% different packet counts: a client did not keep the "
              "interval (irtt's default timer skips missed sends)")


def main():
    work, tck, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    duration, rates, size, cpus, irtt_hmac, rev, built, binary, capture = sys.argv[4:13]
    print(f"irtt-compare: loopback 127.0.0.1, {duration} s per tool and round, {size}-byte packets, "
          f"{rounds} round(s) per rate; taskset server,client = {cpus} for both tools; irtt HMAC "
          f"{'on' if irtt_hmac == '1' else 'off'}; capture {'on' if capture == '1' else 'off'}; "
          f"source tree {rev}; probe binaries {binary}, built {built}; nproc {os.cpu_count()}")
    for rate in rates.split(","):
        report_rate(work, tck, rounds, int(rate))


if __name__ == "__main__":
    main()
