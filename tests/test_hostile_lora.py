"""LoRA imports from a stranger (issue 10, findings 3 and 9, and what already held), through the
running app: broken files are refused in words with nothing left behind, and an import never waits
for the model a training holds.
"""
from __future__ import annotations

import json
import pickle
import struct
import threading
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from safetensors import safe_open
from safetensors.torch import save_file

from tests.app_server import running_app
from tests.hostile_kit import refused, unchanged
from tests.lora_factory import make_tiny_lora

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    with running_app(tmp / "ws") as (studio, url):
        yield studio, Client(url, verbose=False), make_tiny_lora(tmp / "good.safetensors")


def variant(good: Path, target: Path, change=None, metadata=None) -> Path:
    """A copy of a good tiny LoRA with its tensors and/or metadata changed."""
    with safe_open(str(good), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        meta = dict(handle.metadata() or {})
    if change:
        change(tensors)
    if metadata is not None:
        meta.update(metadata)
    save_file(tensors, str(target), metadata=meta)
    return target


def first(tensors, part):
    return next(k for k in sorted(tensors) if part in k)


def to_int8(t):
    key = first(t, "lora_A")
    t[key] = t[key].to(torch.int8)


def to_bool(t):
    key = first(t, "lora_B")
    t[key] = t[key] > 0


def rank_zero(t):
    a = first(t, "lora_A")
    b = a.replace(".lora_A", ".lora_B")
    t[a], t[b] = torch.zeros(0, t[a].shape[1]), torch.zeros(t[b].shape[0], 0)


def three_d(t):
    key = first(t, "lora_A")
    t[key] = t[key][None]


def only_a(t):
    for key in [k for k in t if "lora_B" in k]:
        del t[key]


def with_nan(t):
    key = first(t, "lora_B")
    t[key][0, 0] = float("nan")


def with_inf(t):
    key = first(t, "lora_A")
    t[key][0, 0] = float("inf")


def meta(**fields):
    return {"lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in fields.items()})}


BROKEN = {
    "int8": (to_int8, None, "stored as I8; LoRA weights are floating point"),
    "bool": (to_bool, None, "stored as BOOL"),
    "rank 0": (rank_zero, None, "rank 0"),
    "3-D": (three_d, None, "is 3-D"),
    "only lora_A": (only_a, None, "has only its down/A matrix"),
    "NaN": (with_nan, None, "NaN or infinite values"),
    "Inf": (with_inf, None, "NaN or infinite values"),
    "metadata not JSON": (None, {"lora_adapter_metadata": "{nope"}, "not valid JSON"),
    "metadata rank 0": (None, meta(r=0, lora_alpha=4, target_modules=["attn.to_q"]), "gives rank 0"),
    "metadata alpha NaN": (None, {"lora_adapter_metadata": '{"transformer.r": 4, "transformer.lora_alpha": NaN}'},
                           "lora_alpha"),
    "metadata unknown field": (None, meta(r=4, lora_alpha=4, bogus_field=1), "not a valid LoRA config"),
    "metadata not a table": (None, {"lora_adapter_metadata": "[1, 2]"}, "not a settings table"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_loras_are_refused_in_words_and_leave_nothing(app, kind, tmp_path):
    studio, client, good = app
    change, metadata, words = BROKEN[kind]
    broken = variant(good, tmp_path / "broken.safetensors", change, metadata)
    with unchanged(studio.store.root):  # no record, no file, no empty folder
        refused(client, words, handle_file(str(broken)), f"broken {kind}", "", api_name="/import_lora")


def test_pickles_and_lying_headers_are_refused(app, tmp_path):
    studio, client, good = app
    pickled = tmp_path / "evil.ckpt"
    pickled.write_bytes(pickle.dumps({"x": 1}))
    renamed = tmp_path / "evil.safetensors"
    renamed.write_bytes(pickle.dumps({"x": 1}))
    header = json.dumps({"a.lora_A.weight": {"dtype": "F32", "shape": [4, 1000000], "data_offsets": [0, 16000000]}})
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0" * 64)
    huge_header = tmp_path / "huge.safetensors"
    huge_header.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with unchanged(studio.store.root):
        refused(client, r"\.safetensors files only", handle_file(str(pickled)), "a", "", api_name="/import_lora")
        for path in (renamed, lying, huge_header):
            refused(client, "not a readable .safetensors file", handle_file(str(path)), "a", "",
                    api_name="/import_lora")


def test_import_trigger_words_follow_the_training_rule(app):
    studio, client, good = app
    with unchanged(studio.store.root):
        for trigger in ("a b", "x", "woman", "<script>", "1abc"):
            refused(client, "trigger word|everyday word", handle_file(str(good)), "style", trigger,
                    api_name="/import_lora")
    record = client.predict(handle_file(str(good)), "style", "mila_v1", api_name="/import_lora")
    assert record["trigger"] == "mila_v1"
    client.predict(record["id"], api_name="/delete_lora")


def test_an_import_never_waits_for_the_model(app):
    """A training holds the model lock for its whole run (hours on a real model): an import checks
    the file against the model's skeleton instead, so it finishes while the lock is held, and it
    loads no model."""
    studio, client, good = app
    manager = studio.engine().manager
    done = threading.Event()
    result = {}

    def importer():
        try:
            result["record"] = client.predict(handle_file(str(good)), "while training", "", api_name="/import_lora")
        except Exception as exc:  # noqa: BLE001 - asserted below
            result["error"] = exc
        done.set()

    with manager.lock:  # what train_on_manager holds for the whole training
        thread = threading.Thread(target=importer)
        thread.start()
        finished = done.wait(timeout=300)  # waiting on the lock would deadlock here until the timeout
    thread.join()
    assert finished and "error" not in result, result
    assert result["record"]["metadata"]["format"] == "diffusers" and result["record"]["metadata"]["rank"] == 4
    assert not manager.loaded()


def test_a_lora_for_another_model_is_refused_against_the_skeleton(app, tmp_path):
    studio, client, _ = app
    wide = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(4, 3072),
            "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(3072, 4)}
    path = tmp_path / "wide.safetensors"
    save_file(wide, str(path))
    with unchanged(studio.store.root):
        refused(client, "does not fit the loaded Flux model", handle_file(str(path)), "wide", "",
                api_name="/import_lora")
