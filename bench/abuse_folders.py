"""Hostile model folders and lock-out attempts against one Daphne process (``bench/abuse.py --only folders``).

Each hostile folder is made from the tiny Llama fixture with one thing changed, copied into the
server's models directory as an attacker who can write there would (links kept), and then asked
for by everything that opens a model without a key: the card page, ``POST /scenario/encode`` and,
with a key, an API call naming it. For each case the bench prints:

- the time until the server answered (a refusal in a sentence, or the normal answer) and the statuses;
- the peak resident memory above what the server held just before (Linux's VmHWM, reset per case by
  writing 5 to /proc/<pid>/clear_refs), against the issue's goal of 2 x the weights + 200 MB;
- the longest event-loop stall meanwhile (a WebSocket ping every 20 ms; the pong is written by the
  loop that serves every view), against a quiet reference measured in the same run. Goal: < 100 ms;
- whether the secret file beside the models directory showed up in any answer.

Then the lock-out cases: 100 concurrent wrong keys and codes (how many were checked, how many refused
unchecked), then wrong keys and codes from the address of a right key and a joined student there
(how often they were refused: the goal is never).
"""
from __future__ import annotations

import asyncio
import json
import shutil
import struct
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import websockets

from tests.api import raw

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "models" / "tiny-llama"
SECRET = "bench-secret-4f1c9a-never-on-a-page"


# ---- the folders --------------------------------------------------------------------------------

def _copy(models: Path, name: str) -> Path:
    folder = models / name
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("golden.npz"))
    return folder


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _template(models: Path, name: str, source: str) -> None:
    folder = _copy(models, name)
    _edit_json(folder / "tokenizer_config.json", lambda d: d.__setitem__("chat_template", source))


def _million_tensors(models: Path, name: str) -> None:
    folder = _copy(models, name)
    header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(1_000_000)}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + b"\0" * 4_000_000)


def _split_pattern(models: Path, name: str, pattern: str) -> None:
    folder = _copy(models, name)

    def change(d):
        d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    _edit_json(folder / "tokenizer.json", change)


def make_folders(models: Path) -> dict[str, str]:
    """Write every hostile folder into ``models``; return {name: what it tries}."""
    (models.parent / "secret.key").write_text(SECRET + "\n")
    cases = {}
    folder = _copy(models, "link-licence")
    (folder / "LICENSE").symlink_to("../../secret.key")
    cases["link-licence"] = "LICENSE is a link to a secret beside the models directory"
    _template(models, "tpl-multiply", "{{ 'x' * 100000000 }}")
    cases["tpl-multiply"] = "chat template {{ 'x' * 100000000 }}"
    _template(models, "tpl-lipsum", "{{ lipsum(n=200000) }}")
    cases["tpl-lipsum"] = "chat template lipsum(n=200000)"
    _template(models, "tpl-strftime", "{{ strftime_now('%Y-%m-%d %H:%M' * 2000000) }}")
    cases["tpl-strftime"] = "chat template strftime_now of a 28 MB format"
    _template(models, "tpl-loop", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x")
    cases["tpl-loop"] = "chat template with nested range(100000) loops"
    _template(models, "tpl-boom", "{% for m in messages %}{% if 'BOOM' in m['content'] %}{% for i in range(100000) %}"
                                  "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}"
                                  "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                                  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    cases["tpl-boom"] = "chat template whose loop runs only when a message says BOOM"
    folder = _copy(models, "layers-10m")
    _edit_json(folder / "config.json", lambda d: d.__setitem__("num_hidden_layers", 10_000_000))
    cases["layers-10m"] = "config.json claims 10,000,000 layers (the weights hold 3)"
    _million_tensors(models, "tensors-1m")
    cases["tensors-1m"] = "model.safetensors header with 1,000,000 tensors"
    _split_pattern(models, "regex-redos", "(a|aa)+$")
    cases["regex-redos"] = "pre-tokenizer pattern (a|aa)+$ (catastrophic backtracking)"
    return cases


# ---- measuring one case ---------------------------------------------------------------------------

def _vm(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _requests_for(srv: dict, name: str) -> list[tuple[str, str, bytes | None, dict]]:
    prompt = "a" * 48 + "!" if name == "regex-redos" else ("BOOM" if name == "tpl-boom" else "Hello there")
    scenario = json.dumps({"model": name, "messages": [{"role": "user", "content": prompt}]}).encode()
    api = json.dumps({"model": name, "max_tokens": 4, "messages": [{"role": "user", "content": prompt}]}).encode()
    key = {"x-api-key": srv["api_key"], "content-type": "application/json"}
    return [("GET", f"/models/{urllib.parse.quote(name)}/", None, {}),
            ("POST", "/scenario/encode", scenario, {"content-type": "application/json"}),
            ("POST", "/v1/messages", api, key)]


def _send(srv: dict, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, float, bool]:
    t = time.perf_counter()
    r = raw.request(method, srv["url"] + path, content=body, headers=headers, timeout=120)
    return r.status_code, time.perf_counter() - t, SECRET in r.text


async def _pinging(ws_url: str, origin: str, work) -> tuple[list[float], object]:
    rtts: list[float] = []
    async with websockets.connect(ws_url, origin=origin, max_size=None) as ws:
        await ws.recv()  # hello
        task = asyncio.create_task(work())
        while not task.done():
            t = time.perf_counter()
            await (await ws.ping())
            rtts.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.02)
        return rtts, await task


async def _case(srv: dict, name: str) -> dict:
    ws_url = srv["url"].replace("http", "ws") + "/ws/stream/"
    before = _vm(srv["pid"], "VmRSS")
    peak_ok = _reset_peak(srv["pid"])

    async def work():
        out = []
        for method, path, body, headers in _requests_for(srv, name):
            out.append((path, *await asyncio.to_thread(_send, srv, method, path, body, headers)))
        return out

    rtts, answers = await _pinging(ws_url, srv["url"], work)
    peak = _vm(srv["pid"], "VmHWM") if peak_ok else float("nan")
    return {"answers": answers, "stall_ms": max(rtts), "peak_above_mb": peak - before}


async def _quiet(srv: dict) -> float:
    async def idle():
        await asyncio.sleep(2)
    rtts, _ = await _pinging(srv["url"].replace("http", "ws") + "/ws/stream/", srv["url"], idle)
    return max(rtts)


def folders(srv: dict, cases: dict[str, str]) -> None:
    weights_mb = (FIXTURE / "model.safetensors").stat().st_size / 2**20
    goal = 2 * weights_mb + 200
    quiet = asyncio.run(_quiet(srv))
    print(f"4. hostile model folders (quiet reference: longest stall {quiet:.1f} ms; memory goal: peak under "
          f"{goal:.0f} MB above the server's RSS before the case; stall goal: under 100 ms)")
    for name, what in cases.items():
        r = asyncio.run(_case(srv, name))
        slowest = max(t for _, _, t, _ in r["answers"])
        statuses = " ".join(f"{path.split('/')[1] or path}={status}" for path, status, _, _ in r["answers"])
        leaked = any(leak for *_, leak in r["answers"])
        print(f"   {name:13} {what}: slowest answer {slowest * 1000:.0f} ms, longest stall {r['stall_ms']:.1f} ms "
              f"({r['stall_ms'] / max(quiet, 0.001):.1f}x quiet), peak +{r['peak_above_mb']:.0f} MB; {statuses}"
              f"{'; SECRET LEAKED' if leaked else ''}")


# ---- lock-out ------------------------------------------------------------------------------------

def _count_tokens(srv: dict, key: str) -> int:
    body = json.dumps({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}).encode()
    return raw.request("POST", srv["url"] + "/v1/messages/count_tokens", content=body,
                       headers={"x-api-key": key, "content-type": "application/json"}, timeout=60).status_code


def _get(srv: dict, path: str) -> int:
    return raw.request("GET", srv["url"] + path, timeout=60).status_code


def _student(srv: dict, code: str):
    """A phone that opened the room's page: its cookie jar keeps what the page set (the room's pass)."""
    import urllib.error
    import urllib.request
    from http.cookiejar import CookieJar

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def load() -> int:
        try:
            with opener.open(f"{srv['url']}/r/{code}/", timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
    return load


def lockout(srv: dict) -> None:
    from tests.room_client import start_room

    wrong = "sk-exp-" + "w" * 40
    # First 100 wrong keys at once on a fresh budget (how many are checked), then, with the budget spent,
    # the right key from the same address between more wrong ones.
    with ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(lambda i: _count_tokens(srv, f"{wrong}{i:03d}x"), range(100)))
    right_refused = 0
    for i in range(60):
        _count_tokens(srv, wrong + str(i))
        right_refused += _count_tokens(srv, srv["api_key"]) != 200
    print(f"5. lock-out: 100 concurrent wrong keys: {statuses.count(401)} checked (401), {statuses.count(429)} refused "
          f"unchecked (429), other {len(statuses) - statuses.count(401) - statuses.count(429)}; then the right key refused "
          f"on {right_refused} of 60 calls interleaved with wrong keys from its address (goal 0)")

    code, _secret = start_room(srv["url"])
    alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"

    def wrong_code(i: int) -> str:  # a well-formed code that no live room has (a live one is 1 in 887 million)
        digits = [alphabet[(i // len(alphabet) ** k) % len(alphabet)] for k in range(4)]
        return "ZZ" + "".join(digits)

    student = _student(srv, code)
    joined = student()  # the phone joins before the pupil next to it starts typing codes
    with ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(lambda i: _get(srv, f"/join?code={wrong_code(1000 + i)}"), range(100)))
    student_refused = 0
    for i in range(60):
        _get(srv, f"/join?code={wrong_code(i)}")
        student_refused += student() != 200
    print(f"   rooms: 100 concurrent wrong codes: {statuses.count(404)} checked (404), {statuses.count(429)} refused "
          f"unchecked (429), other {len(statuses) - statuses.count(404) - statuses.count(429)}; then a joined student's "
          f"page (joined: {joined}) refused on {student_refused} of 60 loads interleaved with wrong codes from its "
          "address (goal 0)")
