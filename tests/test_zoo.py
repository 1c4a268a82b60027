"""The model registry: save_weights / load_model and the weights digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_WIDTH, build_tiny
from safetensors import safe_open
from safetensors.torch import save_file

from rnncodec import registry, zoo
from rnncodec.entropy import PRIOR_KEY
from rnncodec.errors import ModelError
from rnncodec.frameworks import ModelConfig


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    net = build_tiny("lstm", "additive", seed=4)
    path = tmp_path / "m.safetensors"
    digest = zoo.save_weights(net, path, name="my-model")
    assert len(digest) == 16
    assert not path.with_suffix(".tmp").exists()
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        names = list(f.keys())
        assert names and all(f.get_tensor(k).dtype == torch.float16 for k in names)
    assert meta["name"] == "my-model"
    assert json.loads(meta["config"]) == {"cell": "lstm", "framework": "additive",
                                          "width": TINY_WIDTH}
    loaded = zoo.load_model(str(path))
    assert loaded.name == "my-model"
    assert loaded.digest == digest
    assert loaded.net.config == ModelConfig("lstm", "additive", TINY_WIDTH)
    assert not loaded.net.training
    assert not any(p.requires_grad for p in loaded.net.parameters())
    for k, v in net.state_dict().items():  # fp16 storage, values within half precision
        assert torch.allclose(loaded.net.state_dict()[k], v.half().float())


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "stem-name.safetensors"
    zoo.save_weights(build_tiny(), path)
    assert zoo.load_model(str(path)).name == "stem-name"


def test_digest_identifies_the_numbers(tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    net = build_tiny(seed=1)
    assert zoo.save_weights(net, a) == zoo.save_weights(net, b)  # same numbers, same hash
    other = zoo.save_weights(build_tiny(seed=2), tmp_path / "c.safetensors")
    assert other != zoo.save_weights(net, a)
    t = {"x": torch.zeros(2, 3, dtype=torch.float16)}
    d = zoo.weights_digest(t)
    assert d == zoo.weights_digest({"x": torch.zeros(2, 3, dtype=torch.float16)})
    assert d != zoo.weights_digest({"y": torch.zeros(2, 3, dtype=torch.float16)})
    assert d != zoo.weights_digest({"x": torch.zeros(3, 2, dtype=torch.float16)})
    assert d != zoo.weights_digest({"x": torch.zeros(2, 3, dtype=torch.float32)})


def test_a_weights_file_says_what_it_is_tuned_for(tmp_path: Path) -> None:
    path = tmp_path / "p.safetensors"
    zoo.save_weights(build_tiny(), path, tune="psnr")
    assert zoo.load_model(str(path)).tune == "psnr"
    tensors = {k: v.half() for k, v in build_tiny().state_dict().items()}
    config = json.dumps(build_tiny().config.to_dict())
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"config": config})
    assert zoo.load_model(str(tmp_path / "old.safetensors")).tune == "ms-ssim"  # before the field
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={"config": config,
                                                                    "tune": "ssim"})
    with pytest.raises(ModelError, match="tuned for 'ssim'"):
        zoo.load_model(str(tmp_path / "bad.safetensors"))


def test_default_model_is_registered_and_loads_without_a_name() -> None:
    assert zoo.DEFAULT_MODEL in zoo.MODELS
    assert zoo.load_model().name == zoo.DEFAULT_MODEL


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_every_registered_model_loads_with_its_config(name: str) -> None:
    spec = zoo.MODELS[name]
    assert spec.path.is_file()
    assert spec.path.stat().st_size < 10 * 2**20  # fp16, small enough for git
    loaded = zoo.load_model(name)
    assert loaded.name == name and loaded.net.config == spec.config and loaded.tune == spec.tune
    assert len(loaded.digest) == 16
    assert PRIOR_KEY in loaded.tables


def test_each_tune_picks_a_registered_model() -> None:
    assert registry.model_for("ms-ssim") == zoo.DEFAULT_MODEL
    for tune in registry.TUNES:
        assert zoo.MODELS[registry.model_for(tune)].tune == tune
    with pytest.raises(ValueError, match="unknown tune"):
        registry.model_for("ssim")


def test_unknown_model_name() -> None:
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        zoo.load_model("no-such-model")


def test_registered_model_with_missing_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = zoo.ModelSpec("ghost", ModelConfig(width=TINY_WIDTH), "not shipped")
    monkeypatch.setitem(zoo.MODELS, "ghost", spec)
    with pytest.raises(ModelError, match="weights of model 'ghost' are missing"):
        zoo.load_model("ghost")


def test_unreadable_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="cannot read model weights"):
        zoo.load_model(str(path))


def test_weights_without_config(tmp_path: Path) -> None:
    path = tmp_path / "noconf.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"name": "x"})
    with pytest.raises(ModelError, match="no valid model config"):
        zoo.load_model(str(path))
    path2 = tmp_path / "badconf.safetensors"
    save_file({"x": torch.zeros(1)}, str(path2),
              metadata={"config": json.dumps({"cell": "rnn", "framework": "additive",
                                              "width": 1})})
    with pytest.raises(ModelError, match="no valid model config"):
        zoo.load_model(str(path2))


def test_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    net = build_tiny()
    tensors = {k: v.half().contiguous() for k, v in net.state_dict().items()}
    path = tmp_path / "mismatch.safetensors"
    config = {"cell": "residual-gru", "framework": "residual-scaling", "width": 0.5}
    save_file(tensors, str(path), metadata={"config": json.dumps(config), "name": "mm"})
    with pytest.raises(ModelError, match="do not fit model 'mm'"):
        zoo.load_model(str(path))


def test_priming_is_part_of_the_weights_digest(tmp_path: Path) -> None:
    """The same tensors primed decode other pixels, so a file made by one is refused by the
    other: their digests differ; an unprimed model's digest is the tensors' alone."""
    from rnncodec.frameworks import ModelConfig, RNNCompressor

    torch.manual_seed(0)
    plain = RNNCompressor(ModelConfig(width=TINY_WIDTH))
    primed = RNNCompressor(ModelConfig(width=TINY_WIDTH, prime=2))
    primed.load_state_dict(plain.state_dict(), strict=False)  # all but the priming gates
    d_plain = zoo.save_weights(plain, tmp_path / "plain.safetensors")
    d_primed = zoo.save_weights(primed, tmp_path / "primed.safetensors")
    assert d_plain != d_primed
    loaded = zoo.load_model(str(tmp_path / "primed.safetensors"))
    assert loaded.net.config.prime == 2 and loaded.digest == d_primed
    assert zoo.load_model(str(tmp_path / "plain.safetensors")).digest == d_plain
