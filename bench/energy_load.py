#!/usr/bin/env python3
"""Provisioning, month backfill and query timing for bench/energy.sh (issue 18).

    energy_load.py provision|backfill|annotate|groups|time  (settings from the environment)

Talks to a running FactoryOps over HTTP with the standard library only, so the benchmark
needs nothing but python3 and curl. Each step prints one JSON line of results.
"""
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse

API = os.environ["API"]  # e.g. 127.0.0.1:8080
F = os.environ.get("FACTORY", "bench")
DEVICES = int(os.environ.get("DEVICES", "1000"))
PEAK_DEVICES = int(os.environ.get("PEAK_DEVICES", "100"))
STEP_MIN = int(os.environ.get("STEP_MIN", "1"))
FROM_MS = int(os.environ["FROM_MS"])
TO_MS = int(os.environ["TO_MS"])
STATE = os.environ["STATE"]  # a JSON file holding tokens and ids between steps
WRITERS = int(os.environ.get("WRITERS", "4"))
WARM = int(os.environ.get("WARM", "20"))


def conn():
    host, port = API.split(":")
    return http.client.HTTPConnection(host, int(port), timeout=600)


def call(c, method, path, token=None, body=None, expect=(200, 201, 204)):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    text = r.read()
    if r.status not in expect:
        sys.exit(f"{method} {path}: {r.status} {text[:500]!r}")
    return json.loads(text) if text else None


def load_state():
    with open(STATE) as f:
        return json.load(f)


def save_state(state):
    with open(STATE, "w") as f:
        json.dump(state, f)


def device_id(i):
    return f"m{i:04d}"


def fp(rest):
    return f"/api/v1/factories/{F}{rest}"


def provision():
    c = conn()
    root = call(c, "POST", "/api/v1/platform/login", body={"username": "root", "password": os.environ["FACTORYOPS_ROOT_PASSWORD"]})["access_token"]
    call(c, "POST", "/api/v1/platform/factories", root, {"id": F, "name": "Bench", "timezone": "Europe/Berlin"})
    email, password = "boss@bench.example", "bench-password-123"
    call(c, "POST", f"/api/v1/platform/factories/{F}/super-admins", root, {"email": email, "name": "Boss", "password": password})
    admin = call(c, "POST", fp("/auth/login"), body={"email": email, "password": password})["access_token"]
    key = call(c, "POST", fp("/api-keys"), admin, {"name": "gateway", "permissions": ["telemetry:write"]})["key"]
    t0 = time.time()
    for i in range(DEVICES):
        call(c, "POST", fp("/devices"), admin, {"id": device_id(i), "name": device_id(i)})
    save_state({"admin": admin, "key": key, "email": email, "password": password})
    print(json.dumps({"step": "provision", "devices": DEVICES, "seconds": round(time.time() - t0, 1)}))


def kw(i, t):
    # A deterministic, varying load: a base per device plus a triangle over the hour.
    minute = (t // 60_000) % 60
    return 20.0 + (i % 50) + (minute if minute < 30 else 60 - minute)


def backfill():
    state = load_state()
    key = state["key"]
    step = STEP_MIN * 60_000
    stamps = list(range(FROM_MS, TO_MS + 1, step))
    lock = threading.Lock()
    next_ix = [0]
    errors = []

    def writer():
        c = conn()
        while True:
            with lock:
                ix = next_ix[0]
                next_ix[0] += 1
            if ix >= len(stamps) or errors:
                return
            t = stamps[ix]
            # One batch = every device at one time (what a gateway flushing its buffer sends).
            for lo in range(0, DEVICES, 1000):
                msgs = ",".join(
                    f'{{"device_id":"{device_id(i)}","ts":{t},"power_kw":{kw(i, t)}}}' for i in range(lo, min(DEVICES, lo + 1000))
                )
                try:
                    answer = call(c, "POST", fp("/telemetry"), key, ('{"messages":[' + msgs + "]}").encode())
                except SystemExit as e:
                    errors.append(str(e))
                    return
                # 200 with per-message results: a point outside the store's retention comes
                # back "rejected" (timestamp_too_old), which would silently thin the month.
                refused = [r for r in answer["results"] if r["status"] != "stored"]
                if refused:
                    errors.append(f"not stored: {refused[0]}")
                    return

    t0 = time.time()
    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        sys.exit(errors[0])
    wall = time.time() - t0
    points = len(stamps) * DEVICES
    print(json.dumps({"step": "backfill", "points": points, "step_minutes": STEP_MIN, "seconds": round(wall, 1), "points_per_s": round(points / wall)}))


def annotate():
    state = load_state()
    c = conn()
    t0 = time.time()
    for i in range(DEVICES):
        call(c, "PATCH", fp(f"/devices/{device_id(i)}/properties/power_kw"), state["admin"], {"quantity": "power", "unit": "kW"})
    print(json.dumps({"step": "annotate", "seconds": round(time.time() - t0, 1)}))


def groups():
    state = load_state()
    c = conn()
    every = [device_id(i) for i in range(DEVICES)]
    g = call(c, "POST", fp("/groups"), state["admin"], {"name": "All", "devices": every})
    p = call(c, "POST", fp("/groups"), state["admin"], {"kind": "tag", "name": "Peak", "devices": every[:PEAK_DEVICES]})
    state["all"], state["peak"] = g["id"], p["id"]
    save_state(state)
    print(json.dumps({"step": "groups", "all": g["id"], "peak": p["id"]}))


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def timed(c, path, token):
    t0 = time.perf_counter()
    body = call(c, "GET", path, token)
    return (time.perf_counter() - t0) * 1000.0, body


def time_queries():
    state = load_state()
    c = conn()
    token = call(c, "POST", fp("/auth/login"), body={"email": state["email"], "password": state["password"]})["access_token"]
    rng = f"from={urllib.parse.quote(iso(FROM_MS))}&to={urllib.parse.quote(iso(TO_MS))}"
    cases = [
        ("consumption-day", fp(f"/energy/consumption?group_id={state['all']}&{rng}&bucket=day"), DEVICES),
        ("peak-demand", fp(f"/energy/peak-demand?group_id={state['peak']}&{rng}&period=month"), PEAK_DEVICES),
    ]
    # A case name in ONLY= limits the run (e.g. to re-time the warm path after a change).
    only = os.environ.get("ONLY")
    for name, path, n in cases:
        if only and name != only:
            continue
        cold, body = timed(c, path, token)
        warm = sorted(timed(c, path, token)[0] for _ in range(WARM))
        p95 = warm[min(len(warm) - 1, int(round(0.95 * len(warm))) - 1)]
        if name == "consumption-day":
            summary = {"days": len(body["items"]), "kwh": round(sum(i["kwh"] for i in body["items"]), 3), "gaps": len(body["gaps"]), "first_gap": body["gaps"][:1]}
        else:
            summary = {"kw": body["items"][0]["kw"], "at": body["items"][0]["at"], "gaps": len(body["gaps"])}
        print(json.dumps({"case": name + os.environ.get("PHASE", ""), "devices": n, "cold_ms": round(cold, 1), "warm_median_ms": round(statistics.median(warm), 1),
                          "warm_p95_ms": round(p95, 1), "warm_n": len(warm), **summary}))


if __name__ == "__main__":
    {"provision": provision, "backfill": backfill, "annotate": annotate, "groups": groups, "time": time_queries}[sys.argv[1]]()
