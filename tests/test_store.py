import json
import subprocess
import sys
import threading

from lora_studio.store import Store, atomic_write_json


def test_records_roundtrip_and_update(tmp_path):
    store = Store(tmp_path)
    record = store.insert("characters", {"name": "Mila"})
    assert store.get("characters", record["id"])["name"] == "Mila"
    store.update("characters", record["id"], name="Mila 2")
    assert store.find("characters", name="Mila 2")[0]["id"] == record["id"]
    store.mutate("characters", record["id"], lambda r: r.setdefault("selected", []).append("x"))
    assert store.require("characters", record["id"])["selected"] == ["x"]
    store.delete("characters", [record["id"]])
    assert store.get("characters", record["id"]) is None


def test_reopen_sees_data(tmp_path):
    Store(tmp_path).insert("loras", {"name": "a"})
    assert Store(tmp_path).find("loras")[0]["name"] == "a"


def test_concurrent_threads_lose_nothing(tmp_path):
    store = Store(tmp_path)
    rec = store.insert("jobs", {"n": 0, "items": []})

    def work(k):
        for i in range(25):
            store.insert("images", {"k": k, "i": i})
            store.mutate("jobs", rec["id"], lambda r: r["items"].append((k, i)))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(store.find("images")) == 100
    assert len(store.require("jobs", rec["id"])["items"]) == 100
    json.loads((tmp_path / "studio.json").read_text())  # still valid JSON


def test_kill_mid_write_leaves_valid_file(tmp_path):
    """A process killed while writing in a loop never leaves a corrupt database."""
    script = f"""
import sys; sys.path.insert(0, {str(tmp_path.parent)!r})
from lora_studio.store import Store
s = Store({str(tmp_path)!r})
i = 0
while True:
    s.insert("images", {{"i": i, "pad": "x" * 5000}}); i += 1
"""
    import os
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    import time

    time.sleep(2.0)
    proc.kill()
    proc.wait()
    data = json.loads((tmp_path / "studio.json").read_text())
    assert len(data["images"]) > 0


def test_atomic_json(tmp_path):
    path = tmp_path / "a" / "b.json"
    atomic_write_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]
