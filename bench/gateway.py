#!/usr/bin/env python3
"""The ingress gateway against HAProxy terminating the same TLS (issue 8).

Topology (loopback, all processes on the same cores):
  direct   fortio --HTTP/1.1, 16 conns, 1 KiB POST--> echo               (the floor, plain HTTP)
  haproxy  fortio --HTTPS--> HAProxy (TLS termination, 2 threads) --HTTP/1.1--> echo
  bulwark  fortio --HTTPS--> `bulwark gateway` --mTLS, HTTP/2--> `bulwark proxy` (echo's sidecar) --> echo
  haproxy2 fortio --HTTPS--> HAProxy (TLS termination) --mTLS, pooled--> HAProxy B --> echo
           (the same hops as Bulwark's: B is the reference HAProxy sidecar of
           ../shared/peers/configs/haproxy-b.cfg)

Both proxied configs terminate the client's TLS with the same certificate
(ECDSA P-256, TLS 1.3, HTTP/1.1 keep-alive from fortio). Bulwark does more on
the way: a route, the authorization policies selecting the gateway (client
IP), caller-side authorization, the mesh hop over mTLS to echo's sidecar and
that sidecar's own authorization of the gateway's identity. haproxy is the
comparison a user makes ("put Bulwark's front door before my app" versus "put
HAProxy before my app"); haproxy2 is the like-for-like one (two proxies, an
mTLS hop between them).

Measured in the same run, interleaved, order rotated each repetition: p50, p90
and p99 latency (fortio), CPU seconds per 1000 requests (utime+stime from
/proc of every process of the config: gateway + sidecar, or HAProxy), RSS.

Needs the peer tools of ../shared/peers (fortio, echo: install-tools.sh),
Debian's haproxy and openssl.

Usage: bench/gateway.py [--reps 3] [--dur 15] [--rates 1000,4000] [--out DIR]
Every process it starts is stopped by its PID at the end.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quick_pair import PEERS, ROOT, TCK, bulwark, cpu_ticks, rss_kb, start, stop_all, wait_port  # noqa: E402

PORTS = {"echo": 18080, "haproxy": 18801, "gateway": 18802, "sidecar": 18803, "haproxy2": 18804,
         "haproxy2_b": 18805, "control": 18811, "admin": 18812, "gw_admin": 18813}

HAPROXY = """global
    nbthread 2
    maxconn 4000
    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
frontend edge
    bind 127.0.0.1:{port} ssl crt {pem} alpn h2,http/1.1
    default_backend echo
backend echo
    http-reuse always
    server echo 127.0.0.1:{echo}
"""

HAPROXY2_A = """global
    nbthread 2
    maxconn 4000
    ssl-default-bind-options ssl-min-ver TLSv1.2
    ssl-default-server-options ssl-min-ver TLSv1.3
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
frontend edge
    bind 127.0.0.1:{port} ssl crt {pem} alpn h2,http/1.1
    default_backend to_b
backend to_b
    http-reuse always
    server b 127.0.0.1:{bport} ssl crt {peers}/certs/client.pem ca-file {peers}/certs/ca.crt verify required verifyhost b.bench.local sni str(b.bench.local) alpn http/1.1
"""

RESOURCES = """apiVersion: bulwark.dev/v1alpha1
kind: Gateway
metadata: {{name: bench-gw, namespace: edge}}
spec:
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      certificates: [{{certFile: {crt}, keyFile: {key}}}]
  routes:
  - {{name: echo, service: default/echo}}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: bench-gw-clients, namespace: edge}}
spec:
  selector: {{service: bench-gw}}
  rules:
  - from: {{ipBlocks: ["127.0.0.0/8"]}}
    to: {{methods: ["GET", "POST"], paths: ["/echo"]}}
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: gateway-to-echo, namespace: default}}
spec:
  selector: {{service: echo}}
  rules:
  - from: {{identities: ["spiffe://bulwark.local/ns/edge/sa/bench-gw"]}}
    to: {{methods: ["GET", "POST"], paths: ["/echo"]}}
"""


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
    for tool in ("haproxy", "openssl", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} missing: apt-get install -y {tool}")
    for name, port in PORTS.items():
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            raise SystemExit(f"port {port} ({name}) already in use")
        except OSError:
            pass

    work = tempfile.mkdtemp(prefix="bulwark-bench-gw-")
    out = a.out or os.path.join(work, "results")
    os.makedirs(out, exist_ok=True)
    log = open(os.path.join(work, "processes.log"), "w")
    binp = os.path.join(work, "bulwark")
    subprocess.run(["go", "build", "-o", binp, "./cmd/bulwark"], cwd=ROOT, check=True)

    # One certificate for both: ECDSA P-256 for localhost.
    crt, key, pem = (os.path.join(work, n) for n in ("edge.crt", "edge.key", "edge.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    with open(pem, "w") as f:
        f.write(open(crt).read() + open(key).read())

    try:
        pid = {}
        pid["echo"] = start([echo, "-listen", f"127.0.0.1:{PORTS['echo']}"], log).pid
        wait_port(PORTS["echo"])

        cfg = os.path.join(work, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY.format(port=PORTS["haproxy"], pem=pem, echo=PORTS["echo"]))
        pid["haproxy"] = start(["haproxy", "-db", "-f", cfg], log).pid
        if not os.path.exists(os.path.join(PEERS, "certs", "ca.crt")):
            subprocess.run([os.path.join(PEERS, "gen-certs.sh")], check=True, capture_output=True)
        with open(os.path.join(PEERS, "configs", "haproxy-b.cfg")) as f:
            text = f.read().replace("@DIR@", PEERS).replace("127.0.0.1:18102", f"127.0.0.1:{PORTS['haproxy2_b']}")
        cfg_b, cfg_a = os.path.join(work, "haproxy2-b.cfg"), os.path.join(work, "haproxy2-a.cfg")
        with open(cfg_b, "w") as f:
            f.write(text)
        with open(cfg_a, "w") as f:
            f.write(HAPROXY2_A.format(port=PORTS["haproxy2"], pem=pem, bport=PORTS["haproxy2_b"], peers=PEERS))
        pid["haproxy2_b"] = start(["haproxy", "-db", "-f", cfg_b], log).pid
        pid["haproxy2_a"] = start(["haproxy", "-db", "-f", cfg_a], log).pid

        data = os.path.join(work, "control")
        start([binp, "control", "--data-dir", data, "--listen", f"127.0.0.1:{PORTS['control']}",
               "--admin-listen", f"127.0.0.1:{PORTS['admin']}", "--log-level", "warn"], log)
        wait_port(PORTS["admin"])
        env = dict(os.environ, BULWARK_CONFIG=os.path.join(data, "operator", "admin.yaml"))
        for _ in range(100):
            if os.path.exists(env["BULWARK_CONFIG"]):
                break
            time.sleep(0.1)
        res = os.path.join(work, "resources.yaml")
        with open(res, "w") as f:
            f.write(RESOURCES.format(crt=crt, key=key))
        bulwark(binp, "apply", "--force", "-f", res, env=env)
        tokens = {}
        for svc in ("default/echo", "edge/bench-gw"):
            tokens[svc] = os.path.join(work, svc.replace("/", "_") + ".token")
            with open(tokens[svc], "w") as f:
                f.write(bulwark(binp, "token", "create", "--service", svc, env=env))
        common = ["--control", f"127.0.0.1:{PORTS['control']}", "--ca-bundle", os.path.join(data, "bundle.pem"),
                  "--log-level", "warn"]
        pid["bulwark_b"] = start([binp, "proxy", *common, "--token-file", tokens["default/echo"],
                                  "--service", "default/echo", "--app", f"127.0.0.1:{PORTS['echo']}",
                                  "--inbound", f"127.0.0.1:{PORTS['sidecar']}"], log).pid
        pid["bulwark_a"] = start([binp, "gateway", *common, "--token-file", tokens["edge/bench-gw"],
                                  "--gateway", "edge/bench-gw", "--listen", f"https=127.0.0.1:{PORTS['gateway']}",
                                  "--data-dir", os.path.join(work, "gateway"), "--admin", f"127.0.0.1:{PORTS['gw_admin']}"],
                                 log).pid
        for p in ("haproxy", "haproxy2", "haproxy2_b", "gateway", "sidecar"):
            wait_port(PORTS[p], 60)
        urls = {"direct": f"http://127.0.0.1:{PORTS['echo']}/echo",
                "haproxy": f"https://localhost:{PORTS['haproxy']}/echo",
                "haproxy2": f"https://localhost:{PORTS['haproxy2']}/echo",
                "bulwark": f"https://localhost:{PORTS['gateway']}/echo"}
        for c, u in urls.items():
            for _ in range(200):
                r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", crt,
                                    "--data-binary", "x", u], capture_output=True, text=True)
                if r.stdout == "200":
                    break
                time.sleep(0.1)
            else:
                raise SystemExit(f"preflight {c}: HTTP {r.stdout} (see {work}/processes.log)")
        procs = {"haproxy": [pid["haproxy"]], "haproxy2": [pid["haproxy2_a"], pid["haproxy2_b"]],
                 "bulwark": [pid["bulwark_a"], pid["bulwark_b"]]}
        records = []

        def run(cfg, qps, dur, rep):
            t0 = {p: cpu_ticks(p) for p in procs.get(cfg, [])}
            res = os.path.join(out, f"{cfg}-q{qps}-r{rep}.json")
            load = subprocess.Popen([fortio, "load", "-quiet", "-loglevel", "Error", "-qps", str(qps), "-c", "16",
                                     "-t", f"{dur}s", "-payload-size", "1024", "-p", "50,90,99,99.9", "-cacert", crt,
                                     "-json", res, urls[cfg]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Mid-run: how many connections the gateway holds to the
            # sidecar (pooled HTTP/2: a handshake per request would show
            # as many short-lived ones).
            conns = None
            try:
                load.wait(dur / 2)
            except subprocess.TimeoutExpired:
                if cfg == "bulwark":
                    ss = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{PORTS['sidecar']} )"],
                                        capture_output=True, text=True)
                    conns = len(ss.stdout.splitlines())
            load.wait(dur + 60)
            with open(res) as f:
                j = json.load(f)
            pct = {p["Percentile"]: p["Value"] * 1000 for p in j["DurationHistogram"]["Percentiles"]}
            rec = {"cfg": cfg, "qps": qps, "rep": rep, "actual_qps": j["ActualQPS"],
                   "count": j["DurationHistogram"]["Count"], "ok": j["RetCodes"].get("200", 0),
                   "p50": pct[50], "p90": pct[90], "p99": pct[99], "p999": pct[99.9]}
            if conns is not None:
                rec["conns_to_sidecar"] = conns
            if cfg in procs:
                rec["cpu"] = {str(p): (cpu_ticks(p) - t0[p]) / TCK for p in procs[cfg]}
                rec["rss_kb"] = sum(rss_kb(p) for p in procs[cfg])
            records.append(rec)
            print(json.dumps(rec), flush=True)

        configs = list(urls)
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
        summarize(records, rates, procs)
        print("results in", out)
    finally:
        stop_all()
        log.close()


def summarize(records, rates, procs):
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    for q in rates:
        print(f"\n### {'max throughput' if q == 0 else f'{q} qps'} (medians)\n")
        print("| config | qps | p50 ms | p90 ms | p99 ms | added p50 | added p99 | added p50 / HAProxy | added p99 / HAProxy | "
              "CPU-s per 1k req | CPU / HAProxy | RSS MiB | errors |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = {}
        for c in ("direct", "haproxy", "haproxy2", "bulwark"):
            rs = [r for r in records if r["cfg"] == c and r["qps"] == q]
            if not rs:
                continue
            row = {k: med([r[k] for r in rs]) for k in ("p50", "p90", "p99")}
            row["qps"] = med([r["actual_qps"] for r in rs])
            row["err"] = sum(r["count"] - r["ok"] for r in rs)
            if c in procs:
                row["cpu"] = med([sum(r["cpu"].values()) / (r["count"] / 1000) for r in rs])
                row["rss"] = med([r["rss_kb"] / 1024 for r in rs])
                if len(procs[c]) == 2:
                    row["cpu_split"] = [med([r["cpu"][str(p)] / (r["count"] / 1000) for r in rs]) for p in procs[c]]
            rows[c] = row
        d, h = rows.get("direct"), rows.get("haproxy")
        f = lambda v: "-" if v is None else f"{v:.3f}"
        ratio = lambda x, y: "-" if x is None or not y else f"{x / y:.2f}"
        for c, row in rows.items():
            add50 = row["p50"] - d["p50"] if d and c != "direct" else None
            add99 = row["p99"] - d["p99"] if d and c != "direct" else None
            h50 = h["p50"] - d["p50"] if h and d else None
            h99 = h["p99"] - d["p99"] if h and d else None
            cpu = f(row.get("cpu"))
            if "cpu_split" in row:
                cpu += " ({:.3f} + {:.3f})".format(*row["cpu_split"])
            rss = "-" if "rss" not in row else f"{row['rss']:.1f}"
            print(f"| {c} | {row['qps']:.0f} | {row['p50']:.3f} | {row['p90']:.3f} | {row['p99']:.3f} | {f(add50)} | "
                  f"{f(add99)} | {ratio(add50, h50)} | {ratio(add99, h99)} | {cpu} | "
                  f"{ratio(row.get('cpu'), h.get('cpu') if h else None)} | {rss} | {row['err']} |")
        b, h2 = rows.get("bulwark"), rows.get("haproxy2")
        if b and h2 and d:
            print(f"\nbulwark / haproxy2 (same hops): added p50 x{(b['p50'] - d['p50']) / (h2['p50'] - d['p50']):.2f}, "
                  f"added p99 x{(b['p99'] - d['p99']) / (h2['p99'] - d['p99']):.2f}, CPU per request x{b['cpu'] / h2['cpu']:.2f}, "
                  f"qps x{b['qps'] / h2['qps']:.2f}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
