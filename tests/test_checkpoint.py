"""Checkpoint folders: safetensors + JSON round trip, atomic writes, `latest`, pruning, RNG state."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from medgen.engine.checkpoint import (
    CheckpointManager,
    flatten_state,
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    unflatten_state,
)
from medgen.errors import InputFileError


def _adam_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW([{"params": [model.weight], "base_lr": 1e-3, "warmup_start": 0},
                             {"params": [model.bias], "base_lr": 1e-4, "warmup_start": 5}], lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return opt.state_dict()


def _assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert sorted(map(str, a)) == sorted(map(str, b))
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def test_flatten_round_trip_keeps_types_and_values():
    state = {"optimizer": _adam_state(), "nested": {"t": (1, 2.5, None, True), "nan": math.nan, "inf": -math.inf},
             "scalar": torch.tensor(3.0), "ints": {0: "a", 7: torch.arange(3)}, "list": [torch.ones(2, dtype=torch.bool)],
             "__tensor__": "a key that looks like a tag"}
    json_obj, tensors = flatten_state(state)
    text = json.dumps(json_obj)  # JSON-serialisable
    _assert_same(unflatten_state(json.loads(text), tensors), state)


def test_save_load_restores_weights_and_optimizer(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt_state = _adam_state()
    path = save_checkpoint(tmp_path, 7, weights={"model": model.state_dict()}, state={"step": 7, "optimizer": opt_state},
                           meta={"stage": "test"})
    assert path.name == "step-00000007"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors", "state.json", "state.safetensors"]
    ckpt = load_checkpoint(path)
    assert ckpt.step == 7 and ckpt.meta["stage"] == "test"
    _assert_same(ckpt.weights["model"], {k: v for k, v in model.state_dict().items()})
    _assert_same(ckpt.state["optimizer"], opt_state)
    other = torch.nn.Linear(3, 2)
    fresh = torch.optim.AdamW([other.weight], lr=1.0)
    fresh.add_param_group({"params": [other.bias]})
    fresh.load_state_dict(ckpt.state["optimizer"])  # loads into a real optimizer
    assert fresh.param_groups[1]["warmup_start"] == 5


def test_keep_last_latest_pointer_and_ignored_partial_folders(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in range(1, 5):
        manager.save(step, weights={"m": {"w": torch.full((2,), float(step))}}, state={"step": step})
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000003", "step-00000004"]
    assert (tmp_path / "latest").read_text().strip() == "step-00000004"

    # A crash mid-write leaves a hidden temp folder, or (another writer) a folder without meta.json.
    partial = tmp_path / ".step-00000005.abc123.part"
    partial.mkdir()
    (partial / "m.safetensors").write_bytes(b"\x00\x01truncated")
    incomplete = tmp_path / "step-00000009"
    incomplete.mkdir()
    trash = tmp_path / ".step-00000002.123.456.trash"  # as if killed while deleting an old checkpoint
    trash.mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000004"
    (tmp_path / "latest").unlink()  # the pointer is not needed
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000004"

    manager.save(5, weights={"m": {"w": torch.zeros(2)}}, state={"step": 5})
    assert not partial.exists() and not trash.exists()  # the next save removes leftovers
    assert (tmp_path / "latest").read_text().strip() == "step-00000005"
    assert latest_checkpoint(tmp_path).name == "step-00000005"
    with pytest.raises(InputFileError, match="not a complete checkpoint"):
        load_checkpoint(incomplete)


def test_disabled_manager_writes_nothing(tmp_path):
    assert CheckpointManager(tmp_path / "c", enabled=False).save(1, weights={}, state={}) is None
    assert not (tmp_path / "c").exists()
    assert latest_checkpoint(tmp_path / "c") is None


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    state = get_rng_state({"noise": gen})
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    path = save_checkpoint(tmp_path, 1, weights={}, state={"rng": state})
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    gen2 = torch.Generator().manual_seed(99)
    set_rng_state(load_checkpoint(path).state["rng"], {"noise": gen2})
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen2))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])
