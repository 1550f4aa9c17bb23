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

This is a quick baseline, not the full harness of the performance issue: it
reuses the peer tools built by ../shared/peers/install-tools.sh (fortio,
echo) and its certificates, and needs Debian's haproxy.

Usage: bench/quick_pair.py [--reps 3] [--dur 15] [--rates 1000,4000] [--out DIR]
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
         "bulwark_a": 18701, "bulwark_b": 18702, "control": 18711, "admin": 18712}

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
        policy = os.path.join(work, "policy.yaml")
        with open(policy, "w") as f:
            f.write("""apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: client-to-echo, namespace: default}
spec:
  selector: {service: echo}
  rules:
  - from: {services: ["default/client"]}
    to: {methods: ["GET", "POST"], paths: ["/echo"]}
""")
        bulwark(binp, "apply", "-f", policy, env=env)
        tokens = {}
        for svc in ("echo", "client"):
            tokens[svc] = os.path.join(work, svc + ".token")
            with open(tokens[svc], "w") as f:
                f.write(bulwark(binp, "token", "create", "--service", "default/" + svc, env=env))
        common = ["--control", f"127.0.0.1:{PORTS['control']}", "--ca-bundle", os.path.join(data, "bundle.pem"),
                  "--log-level", "warn"]
        pid["bulwark_b"] = start([binp, "proxy", *common, "--token-file", tokens["echo"], "--service", "default/echo",
                                  "--app", f"127.0.0.1:{PORTS['echo']}", "--inbound", f"127.0.0.1:{PORTS['bulwark_b']}"], log).pid
        pid["bulwark_a"] = start([binp, "proxy", *common, "--token-file", tokens["client"], "--service", "default/client",
                                  "--upstream", f"echo.default=127.0.0.1:{PORTS['bulwark_a']}"], log).pid
        for p in ("haproxy_a", "haproxy_b", "bulwark_a", "bulwark_b"):
            wait_port(PORTS[p])

        urls = {"direct": f"http://127.0.0.1:{PORTS['echo']}/echo",
                "haproxy": f"http://127.0.0.1:{PORTS['haproxy_a']}/echo",
                "bulwark": f"http://127.0.0.1:{PORTS['bulwark_a']}/echo"}
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
            subprocess.run([fortio, "load", "-quiet", "-loglevel", "Error", "-qps", str(qps), "-c", "16",
                            "-t", f"{dur}s", "-payload-size", "1024", "-p", "50,90,99,99.9", "-json", res, urls[cfg]],
                           capture_output=True, timeout=dur + 60)
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
        for c in ("direct", "haproxy", "bulwark"):
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


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
