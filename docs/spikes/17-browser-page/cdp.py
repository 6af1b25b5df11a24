#!/usr/bin/env python3
"""Drive headless chromium over --remote-debugging-pipe (fd 3 = commands in, fd 4 = replies out,
NUL-terminated JSON). No websocket, no extra packages.
usage: cdp.py URL SCREENSHOT.png [chromium flags...]  -> prints window.__result JSON"""
import json, os, subprocess, sys, tempfile, time, base64

url, shot, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
t0 = time.time()
cmd_r, cmd_w = os.pipe()      # we write commands -> chromium reads fd 3
out_r, out_w = os.pipe()      # chromium writes fd 4 -> we read
def child():
    os.dup2(cmd_r, 3); os.dup2(out_w, 4)
p = subprocess.Popen(["sh", "-c", f'exec chromium "$@" 3<&{cmd_r} 4>&{out_w}', "sh", "--headless=new", "--no-sandbox", "--disable-gpu",
    "--remote-debugging-pipe", "--user-data-dir=" + tempfile.mkdtemp(), "--no-first-run",
    "--window-size=900,1100", *extra, "about:blank"],
    pass_fds=(cmd_r, out_w), stdout=subprocess.DEVNULL, stderr=open(shot + ".stderr", "w"))
os.close(cmd_r); os.close(out_w)
wf = os.fdopen(cmd_w, "wb", buffering=0); rf = os.fdopen(out_r, "rb", buffering=0)
buf = b""; nid = 0
def call(method, params=None, session=None):
    global buf, nid
    nid += 1; msg = {"id": nid, "method": method, "params": params or {}}
    if session: msg["sessionId"] = session
    wf.write(json.dumps(msg).encode() + b"\0")
    while True:
        while b"\0" not in buf:
            chunk = rf.read(65536)
            if not chunk: raise SystemExit("chromium closed the pipe")
            buf += chunk
        line, buf = buf.split(b"\0", 1)
        m = json.loads(line)
        if m.get("id") == nid:
            if "error" in m: raise SystemExit(f"{method}: {m['error']}")
            return m["result"]
try:
    tid = call("Target.createTarget", {"url": "about:blank"})["targetId"]
    sid = call("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
    call("Page.enable", session=sid)
    call("Page.navigate", {"url": url}, session=sid)
    res = None
    for _ in range(300):  # 30 s
        r = call("Runtime.evaluate", {"expression": "window.__result ? JSON.stringify(window.__result) : ''", "returnByValue": True}, session=sid)
        v = r["result"].get("value")
        if v: res = v; break
        time.sleep(0.1)
    png = call("Page.captureScreenshot", {"format": "png"}, session=sid)["data"]
    open(shot, "wb").write(base64.b64decode(png))
    call("Browser.close")
finally:
    try: p.wait(timeout=5)
    except Exception: p.kill()
print(json.dumps({"elapsed_s": round(time.time() - t0, 2), "result": json.loads(res) if res else None}))
