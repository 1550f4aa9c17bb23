#!/usr/bin/env python3
"""First side-by-side measurement of a Bulwark sidecar pair against HAProxy.

Topology (loopback, as ../shared/peers/run-bench.sh):
  fortio --HTTP/1.1, 16 conns, 1 KiB POST--> proxy A --mTLS--> proxy B --> echo

Configs measured in the same run, interleaved, order rotated each repetition:
  direct   fortio -> echo (the floor)
  haproxy  the reference HAProxy 2.6 pair of ../shared/peers/configs
  bulwark  two real `bulwark proxy` sidecars with a real control plane and an
           ALLOW policy for the client's identity (authorization on the path);
           A is the client's sidecar (--upstream port), B fronts echo.
           Access logs are at warn (denials only), as HAProxy's logging is off.

With --telemetry it measures what visibility costs instead (issue 7): two
more Bulwark pairs in the same run,
  bulwark_off  metrics, access log and tracing all off (--access-log off, no
               --metrics, no --trace-endpoint)
  bulwark_obs  all on: --metrics (scraped every 5 s), an access log line per
               request to a file, and OTLP tracing at --trace-sampling 0.1 to
               a local sink (cmd/otlpsink) that counts the spans

This is a quick baseline, not the full harness of the performance issue: it
reuses the peer tools built by ../shared/peers/install-tools.sh (fortio,
echo) and its certificates, and needs Debian's haproxy.

With --prev BINARY, a pair of an earlier build (bulwark_prev, default flags:
access log on stderr at warn, no metrics, no tracing) runs in the same run, to
see what a change cost.

Usage: bench/quick_pair.py [--reps 3] [--dur 15] [--rates 1000,4000] [--out DIR] [--telemetry] [--prev BIN]
Every process it starts is stopped by its PID at the end.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.path.normpath(os.path.join(ROOT, "..", "shared", "peers"))
TCK = os.sysconf("SC_CLK_TCK")

PORTS = {"echo": 18080, "haproxy_a": 18101, "haproxy_b": 18102,
         "bulwark_a": 18701, "bulwark_b": 18702, "control": 18711, "admin": 18712,
         "bulwark_off_a": 18721, "bulwark_off_b": 18722, "bulwark_obs_a": 18731, "bulwark_obs_b": 18732,
         "metrics_a": 18741, "metrics_b": 18742, "otlp": 18750, "bulwark_prev_a": 18761, "bulwark_prev_b": 18762}

started = []


def start(args, log, env=None):
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    started.append(p)
    return p


def stop_all():
    for p in started:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    for p in started:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    print("stopped PIDs:", " ".join(str(p.pid) for p in started))


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} did not open")


def tree(pid):
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return pids


def cpu_ticks(pid):
    t = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return t


def rss_kb(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def bulwark(bin_, *args, env=None, check=True):
    r = subprocess.run([bin_, *args], capture_output=True, text=True, env=env, timeout=60)
    if check and r.returncode != 0:
        raise SystemExit(f"bulwark {' '.join(args)}: {r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dur", type=int, default=15)
    ap.add_argument("--rates", default="1000,4000")
    ap.add_argument("--out", default="")
    ap.add_argument("--telemetry", action="store_true", help="compare Bulwark with metrics, access logs and tracing on vs off")
    ap.add_argument("--prev", default="", help="a bulwark binary of an earlier commit, measured as a third pair (bulwark_prev) with default flags")
    a = ap.parse_args()
    fortio = os.path.join(PEERS, "bin", "fortio")
    echo = os.path.join(PEERS, "bin", "echo")
    for b in (fortio, echo):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"{b} missing: run {PEERS}/install-tools.sh first")
    if not shutil.which("haproxy"):
        raise SystemExit("haproxy missing: apt-get install -y haproxy")
    if not os.path.exists(os.path.join(PEERS, "certs", "ca.crt")):
        subprocess.run([os.path.join(PEERS, "gen-certs.sh")], check=True, capture_output=True)
    for name, port in PORTS.items():
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            raise SystemExit(f"port {port} ({name}) already in use")
        except OSError:
            pass

    work = tempfile.mkdtemp(prefix="bulwark-bench-")
    out = a.out or os.path.join(work, "results")
    os.makedirs(out, exist_ok=True)
    log = open(os.path.join(work, "processes.log"), "w")
    binp = os.path.join(work, "bulwark")
    subprocess.run(["go", "build", "-o", binp, "./cmd/bulwark"], cwd=ROOT, check=True)
    sinkp = os.path.join(work, "otlpsink")
    if a.telemetry:
        subprocess.run(["go", "build", "-o", sinkp, "./cmd/otlpsink"], cwd=ROOT, check=True)

    try:
        pid = {}
        pid["echo"] = start([echo, "-listen", f"127.0.0.1:{PORTS['echo']}"], log).pid
        wait_port(PORTS["echo"])

        # HAProxy pair from the reference configs.
        for cfg in ("haproxy-a.cfg", "haproxy-b.cfg"):
            with open(os.path.join(PEERS, "configs", cfg)) as f:
                text = f.read().replace("@DIR@", PEERS).replace("@RUN@", work)
            with open(os.path.join(work, cfg), "w") as f:
                f.write(text)
        pid["haproxy_b"] = start(["haproxy", "-db", "-f", os.path.join(work, "haproxy-b.cfg")], log).pid
        pid["haproxy_a"] = start(["haproxy", "-db", "-f", os.path.join(work, "haproxy-a.cfg")], log).pid

        # Bulwark pair: control plane, B in front of echo, A for the client.
        data = os.path.join(work, "control")
        pid["control"] = start([binp, "control", "--data-dir", data, "--listen", f"127.0.0.1:{PORTS['control']}",
                                "--admin-listen", f"127.0.0.1:{PORTS['admin']}", "--log-level", "warn"], log).pid
        wait_port(PORTS["admin"])
        env = dict(os.environ, BULWARK_CONFIG=os.path.join(data, "operator", "admin.yaml"))
        for _ in range(100):
            if os.path.exists(env["BULWARK_CONFIG"]):
                break
            time.sleep(0.1)
        # One pair per Bulwark config, each its own client and echo
        # services so that no pair balances onto another's B.
        pairs = {"bulwark": ("", [])}
        if a.telemetry:
            pid["otlp"] = start([sinkp, "-listen", f"127.0.0.1:{PORTS['otlp']}"], log).pid
            wait_port(PORTS["otlp"])
            pairs = {"bulwark_off": ("-off", ["--access-log", "off"]),
                     "bulwark_obs": ("-obs", ["--trace-endpoint", f"127.0.0.1:{PORTS['otlp']}", "--trace-insecure",
                                              "--trace-sampling", "0.1"])}
        if a.prev:
            pairs["bulwark_prev"] = ("-prev", [])
        policy = os.path.join(work, "policy.yaml")
        with open(policy, "w") as f:
            for sfx in (v[0] for v in pairs.values()):
                f.write(f"""---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: client{sfx}-to-echo{sfx}, namespace: default}}
spec:
  selector: {{service: echo{sfx}}}
  rules:
  - from: {{services: ["default/client{sfx}"]}}
    to: {{methods: ["GET", "POST"], paths: ["/echo"]}}
""")
        bulwark(binp, "apply", "-f", policy, env=env)
        tokens = {}
        for svc in (p + s for s in (v[0] for v in pairs.values()) for p in ("echo", "client")):
            tokens[svc] = os.path.join(work, svc + ".token")
            with open(tokens[svc], "w") as f:
                f.write(bulwark(binp, "token", "create", "--service", "default/" + svc, env=env))
        common = ["--control", f"127.0.0.1:{PORTS['control']}", "--ca-bundle", os.path.join(data, "bundle.pem"),
                  "--log-level", "warn"]
        urls = {"direct": f"http://127.0.0.1:{PORTS['echo']}/echo",
                "haproxy": f"http://127.0.0.1:{PORTS['haproxy_a']}/echo"}
        scrape = []
        for cfg, (sfx, extra) in pairs.items():
            ea, eb = list(extra), list(extra)
            if cfg == "bulwark_obs":
                ea += ["--metrics", f"127.0.0.1:{PORTS['metrics_a']}", "--access-log", os.path.join(work, "access-a.log")]
                eb += ["--metrics", f"127.0.0.1:{PORTS['metrics_b']}", "--access-log", os.path.join(work, "access-b.log")]
                scrape = [f"http://127.0.0.1:{PORTS['metrics_a']}/metrics", f"http://127.0.0.1:{PORTS['metrics_b']}/metrics"]
            pbin = os.path.abspath(a.prev) if cfg == "bulwark_prev" else binp
            pid[cfg + "_b"] = start([pbin, "proxy", *common, *eb, "--token-file", tokens["echo" + sfx],
                                     "--service", "default/echo" + sfx, "--app", f"127.0.0.1:{PORTS['echo']}",
                                     "--inbound", f"127.0.0.1:{PORTS[cfg + '_b']}"], log).pid
            pid[cfg + "_a"] = start([pbin, "proxy", *common, *ea, "--token-file", tokens["client" + sfx],
                                     "--service", "default/client" + sfx,
                                     "--upstream", f"echo{sfx}.default=127.0.0.1:{PORTS[cfg + '_a']}"], log).pid
            urls[cfg] = f"http://127.0.0.1:{PORTS[cfg + '_a']}/echo"
        for p in ["haproxy_a", "haproxy_b"] + [c + s for c in pairs for s in ("_a", "_b")]:
            wait_port(PORTS[p])
        # Preflight: each chain echoes (Bulwark's A gets its snapshot in the
        # first seconds after start).
        for c, u in urls.items():
            for _ in range(100):
                r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "x", u],
                                   capture_output=True, text=True)
                if r.stdout == "200":
                    break
                time.sleep(0.1)
            else:
                raise SystemExit(f"preflight {c}: HTTP {r.stdout}")
        configs = list(urls)
        records = []

        def run(cfg, qps, dur, rep):
            a0 = cpu_ticks(pid[cfg + "_a"]) if cfg != "direct" else 0
            b0 = cpu_ticks(pid[cfg + "_b"]) if cfg != "direct" else 0
            res = os.path.join(out, f"{cfg}-q{qps}-r{rep}.json")
            load = subprocess.Popen([fortio, "load", "-quiet", "-loglevel", "Error", "-qps", str(qps), "-c", "16",
                                     "-t", f"{dur}s", "-payload-size", "1024", "-p", "50,90,99,99.9", "-json", res,
                                     urls[cfg]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while load.poll() is None:
                # A Prometheus server scrapes every 15 s by default; every
                # 5 s here, so that scraping is in the measured cost.
                if cfg == "bulwark_obs":
                    for u in scrape:
                        subprocess.run(["curl", "-s", "-o", "/dev/null", u])
                try:
                    load.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            with open(res) as f:
                j = json.load(f)
            pct = {p["Percentile"]: p["Value"] * 1000 for p in j["DurationHistogram"]["Percentiles"]}
            rec = {"cfg": cfg, "qps": qps, "rep": rep, "actual_qps": j["ActualQPS"],
                   "count": j["DurationHistogram"]["Count"], "ok": j["RetCodes"].get("200", 0),
                   "p50": pct[50], "p90": pct[90], "p99": pct[99], "p999": pct[99.9]}
            if cfg != "direct":
                rec["cpu_a"] = (cpu_ticks(pid[cfg + "_a"]) - a0) / TCK
                rec["cpu_b"] = (cpu_ticks(pid[cfg + "_b"]) - b0) / TCK
                rec["rss_kb"] = rss_kb(pid[cfg + "_a"]) + rss_kb(pid[cfg + "_b"])
            records.append(rec)
            print(json.dumps(rec), flush=True)

        for c in configs:  # warm-up, discarded
            run(c, 1000, 3, 0)
        records.clear()
        rates = [int(x) for x in a.rates.split(",")] + [0]
        for rep in range(1, a.reps + 1):
            for q in rates:
                for i in range(len(configs)):
                    run(configs[(i + rep - 1) % len(configs)], q, a.dur if q else 10, rep)
                    time.sleep(1)
        with open(os.path.join(out, "records.jsonl"), "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        summarize(records, rates)
        print("results in", out)
    finally:
        stop_all()
        log.close()


def summarize(records, rates):
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    for q in rates:
        print(f"\n### {'max throughput' if q == 0 else f'{q} qps'} (medians)\n")
        print("| config | qps | p50 ms | p99 ms | added p50 | added p99 | added p50 / HAProxy | added p99 / HAProxy | CPU-s per 1k req (A+B) | CPU / HAProxy | RSS MiB A+B | errors |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = {}
        for c in ("direct", "haproxy", "bulwark", "bulwark_prev", "bulwark_off", "bulwark_obs"):
            rs = [r for r in records if r["cfg"] == c and r["qps"] == q]
            if not rs:
                continue
            row = {"qps": med([r["actual_qps"] for r in rs]), "p50": med([r["p50"] for r in rs]),
                   "p99": med([r["p99"] for r in rs]), "err": sum(r["count"] - r["ok"] for r in rs)}
            if c != "direct":
                row["cpu"] = med([(r["cpu_a"] + r["cpu_b"]) / (r["count"] / 1000) for r in rs])
                row["rss"] = med([r["rss_kb"] / 1024 for r in rs])
            rows[c] = row
        d, h = rows.get("direct"), rows.get("haproxy")
        for c, row in rows.items():
            add50 = row["p50"] - d["p50"] if d and c != "direct" else None
            add99 = row["p99"] - d["p99"] if d and c != "direct" else None
            h50 = h["p50"] - d["p50"] if h and d else None
            h99 = h["p99"] - d["p99"] if h and d else None
            f = lambda v: "-" if v is None else f"{v:.3f}"
            ratio = lambda x, y: "-" if x is None or not y else f"{x / y:.2f}"
            rss = "-" if "rss" not in row else f"{row['rss']:.1f}"
            print(f"| {c} | {row['qps']:.0f} | {row['p50']:.3f} | {row['p99']:.3f} | {f(add50)} | {f(add99)} | "
                  f"{ratio(add50, h50)} | {ratio(add99, h99)} | {f(row.get('cpu'))} | "
                  f"{ratio(row.get('cpu'), h.get('cpu') if h else None)} | {rss} | {row['err']} |")
        off, obs = rows.get("bulwark_off"), rows.get("bulwark_obs")
        if off and obs and d:
            r = lambda k, base: (obs[k] - base) / (off[k] - base) if off[k] - base else float("nan")
            print(f"\nvisibility on / off: added p50 x{r('p50', d['p50']):.2f}, added p99 x{r('p99', d['p99']):.2f}, "
                  f"CPU per request x{obs['cpu'] / off['cpu']:.2f}, RSS x{obs['rss'] / off['rss']:.2f}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
