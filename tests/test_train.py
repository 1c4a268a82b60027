"""Training: a couple of steps on generated photos, checkpoint, log, weights, resume; the CLI."""

from __future__ import annotations

import csv
import faulthandler
import io
import itertools
import os
import random
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_WIDTH, gradient_image
from PIL import Image

from rnncodec import codec, zoo
from rnncodec.cli import main
from rnncodec.errors import InputMissingError, ModelError
from rnncodec.export import export
from rnncodec.frameworks import ModelConfig, RNNCompressor, ms_ssim_loss
from rnncodec.train import (
    TrainConfig,
    bank_batch,
    center_crops,
    draw_batch,
    list_images,
    load_pool,
    patch_bank,
    png_size,
    random_patch,
    resolve_device,
    setup_distributed,
    split_photos,
    tensorboard_writer,
    train,
    train_step,
    validate,
    wrap,
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four generated 'photos' (≥ 128 px, PNG and JPEG, one in a subfolder) and a non-image."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i, (h, w) in enumerate([(128, 160), (144, 128), (130, 150), (160, 136)]):
        img = Image.fromarray(gradient_image(h, w, seed=20 + i))
        if i == 1:
            img.save(root / "sub" / f"p{i}.JPG", quality=90)
        else:
            img.save(root / f"p{i}.png")
    (root / "notes.txt").write_text("not a photo")
    return root


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(data=str(data), out=str(out), width=TINY_WIDTH, iterations=2, patch=32,
                       batch=2, steps=2, val_every=1000, val_images=1, seed=0)
    return replace(base, **kw)


def _log_rows(out: Path) -> list[list[str]]:
    """The data rows of a run's log.csv, after checking its one header row."""
    with (out / "log.csv").open() as f:
        header, *rows = csv.reader(f)
    assert header[:4] == ["step", "loss", "patches_per_s", "psnr_it1"]
    assert all(len(r) == len(header) for r in rows)
    return rows


def test_list_images_is_recursive_and_filters_suffixes(photos: Path) -> None:
    names = [p.name for p in list_images(photos)]
    assert sorted(names) == ["p0.png", "p1.JPG", "p2.png", "p3.png"]


def test_a_pack_holds_out_the_photos_its_folder_holds_out(tmp_path: Path) -> None:
    """The validation split depends on photo names, not on which other photos are present: a
    training pack (scripts/make_training_pack.py) validates on the same photos as its folder."""
    import subprocess

    root = tmp_path / "data"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
        for i in range(15):
            Image.fromarray(gradient_image(16, 16, seed=i)).save(root / sub / f"{i}.png")
    paths = list_images(root)
    val, rest = split_photos(paths, root, 3)
    assert len(val) == 3 and sorted(val + rest) == paths
    assert split_photos(paths[::-1], root, 3)[0] == val  # order does not matter
    pack = tmp_path / "pack"
    subprocess.run([sys.executable, "scripts/make_training_pack.py", str(root), str(pack),
                    "--mib", "0.005", "--val", "3"], check=True, capture_output=True,
                   cwd=Path(__file__).parents[1])
    packed = list_images(pack)
    assert 3 < len(packed) < len(paths)  # a subset, within the budget
    assert [p.name for p in split_photos(packed, pack, 3)[0]] == ["_".join(
        p.relative_to(root).parts) for p in val]


def test_load_pool_skips_small_photos(tmp_path: Path) -> None:
    Image.fromarray(gradient_image(128, 130)).save(tmp_path / "big.png")
    Image.fromarray(gradient_image(100, 300)).save(tmp_path / "thumb.png")
    pool = load_pool(list_images(tmp_path))
    assert len(pool) == 1
    assert pool[0].shape == (3, 128, 130) and pool[0].dtype == torch.uint8


def test_random_patch_and_center_crops() -> None:
    img = torch.from_numpy(gradient_image(140, 200)).permute(2, 0, 1).contiguous()
    rng = random.Random(0)
    for _ in range(10):
        p = random_patch(img, 32, rng)
        assert p.shape == (3, 32, 32)
        assert p.min() >= -0.5 and p.max() <= 0.5
    crops = center_crops([img, img], 128)
    assert crops.shape == (2, 3, 128, 128)
    expected = img[:, 6:134, 36:164].float() / 255 - 0.5
    assert torch.equal(crops[0], expected)


def test_patch_bank_cuts_downscaled_crops_and_batches_flip() -> None:
    img = torch.from_numpy(gradient_image(140, 200)).permute(2, 0, 1).contiguous()
    bank = patch_bank([img, img[:, :128, :128]], 100, 32, random.Random(0), torch.device("cpu"),
                      rounds=4)
    assert bank.shape == (100, 3, 32, 32) and bank.dtype == torch.uint8
    assert len({p.numpy().tobytes() for p in bank}) > 90  # random positions and scales
    torch.manual_seed(0)
    batch = bank_batch(bank, 64)
    assert batch.shape == (64, 3, 32, 32) and batch.min() >= -0.5 and batch.max() <= 0.5
    as_cut = {p.numpy().tobytes() for p in bank.float() / 255 - 0.5}
    flipped = [p.numpy().tobytes() not in as_cut for p in batch]
    assert 10 < sum(flipped) < 54  # about half are mirrored (the gradient is not symmetric)


@pytest.mark.parametrize("binarize", ["stochastic", "sign"])
def test_train_step_binarizes_as_configured(binarize: str) -> None:
    """Sign bits (as at inference) give the same loss whatever the random state; the paper's
    stochastic bits do not."""
    from conftest import build_tiny

    cfg = TrainConfig(iterations=2, binarize=binarize)
    net = build_tiny().train()  # (it seeds torch itself)
    batch = torch.rand(2, 3, 32, 32) - 0.5
    losses = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        losses.append(train_step(net, batch, cfg).item())
    assert (losses[0] == losses[1]) == (binarize == "sign")


def test_train_step_adds_the_weighted_ms_ssim_term() -> None:
    from conftest import build_tiny

    net = build_tiny().train()
    batch = torch.rand(2, 3, 48, 48) - 0.5
    base = TrainConfig(iterations=2, binarize="sign", patch=48)
    l1 = train_step(net, batch, base).item()
    mixed = train_step(net, batch, replace(base, ms_ssim=2.0)).item()
    with torch.no_grad():
        term = ms_ssim_loss(batch, [r.float() for r in net(batch, 2, False)]).item()
    assert mixed == pytest.approx(l1 + 2.0 * term, rel=1e-5)


def test_train_step_sums_the_weighted_terms_and_skips_weight_zero() -> None:
    from conftest import build_tiny

    from rnncodec.frameworks import (
        ms_ssim_db_loss,
        psnr_db_loss,
        psnr_hvs_db_loss,
        residual_loss,
    )

    net = build_tiny().train()
    batch = torch.rand(2, 3, 48, 48) - 0.5
    cfg = TrainConfig(iterations=2, binarize="sign", patch=48, l1=0.5, psnr_db=0.01,
                      ms_ssim_db=0.02, psnr_hvs_db=0.03)
    loss = train_step(net, batch, cfg).item()
    with torch.no_grad():
        recons = [r.float() for r in net(batch, 2, False)]
        expected = (0.5 * residual_loss(batch, recons) + 0.01 * psnr_db_loss(batch, recons)
                    + 0.02 * ms_ssim_db_loss(batch, recons)
                    + 0.03 * psnr_hvs_db_loss(batch, recons)).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    only_db = train_step(net, batch, replace(cfg, l1=0.0, ms_ssim_db=0.0, psnr_hvs_db=0.0)).item()
    assert only_db == pytest.approx(0.01 * psnr_db_loss(batch, recons).item(), rel=1e-5)


def test_channels_last_trains_the_same_model(photos: Path, tmp_path: Path) -> None:
    """NHWC is a layout, not a model: the same loss, and a run's weights export as NCHW's do
    (two Adam steps of lr 1e-3 move a weight by at most 2e-3 either way, whatever the sums'
    rounding)."""
    from conftest import build_tiny
    from safetensors.torch import load_file

    batch = torch.rand(2, 3, 32, 32) - 0.5
    cfg = TrainConfig(iterations=2, binarize="sign")
    losses = [train_step(build_tiny().train().to(memory_format=fmt),
                         batch.contiguous(memory_format=fmt), cfg).item()
              for fmt in (torch.contiguous_format, torch.channels_last)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    weights = [load_file(train(_config(photos, tmp_path / str(cl), channels_last=cl)))
               for cl in (False, True)]
    assert weights[0].keys() == weights[1].keys()
    for k, v in weights[0].items():
        torch.testing.assert_close(weights[1][k].float(), v.float(), atol=4e-3, rtol=0)


def test_non_finite_gradients_skip_the_step(photos: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import rnncodec.train as tr

    def poisoned(net: torch.nn.Module, batch: torch.Tensor, cfg: TrainConfig,
                 *rate: object) -> torch.Tensor:
        loss = train_step(net, batch, cfg, *rate)  # type: ignore[arg-type]
        for p in net.parameters():
            p.grad.fill_(float("nan"))
        return loss

    monkeypatch.setattr(tr, "train_step", poisoned)
    train(_config(photos, tmp_path / "nan", val_every=1))
    assert "2 steps skipped: non-finite gradients" in capsys.readouterr().out
    train(_config(photos, tmp_path / "init", steps=0))
    after, init = (zoo.load_model(str(tmp_path / d / "model.safetensors")).net.state_dict()
                   for d in ("nan", "init"))
    assert all(torch.equal(after[k], init[k]) for k in init)


def test_training_from_a_bank(photos: Path, tmp_path: Path) -> None:
    train(_config(photos, tmp_path / "bank", bank=64))
    assert torch.load(tmp_path / "bank" / "checkpoint.pt", weights_only=True)["step"] == 2


@pytest.mark.parametrize("side", [32, 176])  # single-scale SSIM below 161 px, MS-SSIM above
def test_validate_reports_psnr_and_ms_ssim_per_iteration_and_keeps_training_mode(side: int
                                                                                  ) -> None:
    from conftest import build_tiny

    from rnncodec.metrics import ms_ssim, psnr

    net = build_tiny().train()
    images = torch.from_numpy(np.stack([gradient_image(side, side, seed=s) for s in (1, 2)]))
    images = images.permute(0, 3, 1, 2).float() / 255 - 0.5
    psnrs, ssims = validate(net, images, 3)
    assert len(psnrs) == len(ssims) == 3 and all(np.isfinite(psnrs))
    assert all(0 < v <= 1 for v in ssims)
    assert net.training
    assert (psnrs, ssims) == validate(net, images, 3)  # inference binarization: deterministic
    # the same numbers as the evaluation metrics on 8-bit images (up to rounding to 8 bits)
    net.eval()
    recon = net(images, 1)[0].clamp(-0.5, 0.5)
    to8 = [((t + 0.5) * 255).round().byte().permute(1, 2, 0).numpy() for t in (recon[0], images[0])]
    assert abs(ms_ssim(*to8) - float(validate(net, images[:1], 1)[1][0])) < 2e-3
    assert abs(psnr(*to8) - validate(net, images[:1], 1)[0][0]) < 0.1


def test_two_steps_write_checkpoint_log_and_loadable_weights(photos: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture
                                                             ) -> None:
    out = tmp_path / "run"
    weights = train(_config(photos, out))
    assert weights == out / "model.safetensors" and weights.is_file()
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2
    assert ckpt["config"]["width"] == TINY_WIDTH
    assert set(ckpt) >= {"model", "opt", "rng"}
    rows = _log_rows(out)
    assert len(rows) == 1 and rows[0][0] == "2"
    assert len(rows[0]) == 3 + 2 + 2  # step, loss, rate, PSNR and MS-SSIM after 2 iterations
    assert all(np.isfinite(float(v)) for v in rows[0][1:])
    assert "step 2 loss" in capsys.readouterr().out

    loaded = zoo.load_model(str(weights))
    assert loaded.name == "model"
    assert loaded.net.config == ModelConfig("residual-gru", "residual-scaling", TINY_WIDTH)
    for k, v in ckpt["model"].items():  # the exported weights are the checkpoint's, in fp16
        assert torch.allclose(loaded.net.state_dict()[k], v.half().float())
    a = gradient_image(20, 36)
    data = codec.compress(a, iterations=2, model=str(weights))
    assert codec.decompress(data, model=str(weights)).size == (36, 20)


def test_resume_continues_from_the_checkpoint(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(_config(photos, out, steps=2))
    first_digest = zoo.weights_digest(_tensors(first))
    train(_config(photos, out, steps=3))  # one more step
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3
    assert [r[0] for r in _log_rows(out)] == ["2", "3"]
    second_digest = zoo.weights_digest(_tensors(first))
    assert second_digest != first_digest
    # nothing left to do: no new step, same weights
    train(_config(photos, out, steps=3))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3
    assert [r[0] for r in _log_rows(out)] == ["2", "3"]
    assert zoo.weights_digest(_tensors(first)) == second_digest
    # resume=False starts again from step 0
    train(_config(photos, out, steps=1, resume=False))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    assert [r[0] for r in _log_rows(out)] == ["2", "3", "1"]
    with pytest.raises(ModelError, match="use another --out"):  # another model, same folder
        train(_config(photos, out, steps=2, width=0.0625))
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:500])
    with pytest.raises(ModelError, match="not a usable rnncodec training checkpoint"):
        train(_config(photos, out, steps=2))


@pytest.mark.parametrize("content, why", [
    (b"garbage", "not a file of tensors that torch.load reads safely"),
    (b"junk", "unpack requires a buffer of 4 bytes"),
    (torch.zeros(2), "it holds a Tensor, not a dict of settings and weights"),
    ({"step": 1}, "it has no 'config' entry"),
    ({"config": {"cell": "gru", "framework": "additive", "width": 0.03}, "model": {}},
     "Error(s) in loading state_dict"),
])
def test_export_refuses_what_is_not_a_checkpoint(content: bytes | dict | torch.Tensor, why: str,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ModelError, match=re.escape(f"{path} is not a usable rnncodec training "
                                                   f"checkpoint: {why}")):
        export(path, tmp_path / "x.safetensors", str(tmp_path), "x")
    assert not (tmp_path / "x.safetensors").exists()


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_training_is_reproducible(photos: Path, tmp_path: Path) -> None:
    a = train(_config(photos, tmp_path / "a", steps=1))
    b = train(_config(photos, tmp_path / "b", steps=1))
    assert zoo.weights_digest(_tensors(a)) == zoo.weights_digest(_tensors(b))
    c = train(_config(photos, tmp_path / "c", steps=1, seed=1))
    assert zoo.weights_digest(_tensors(c)) != zoo.weights_digest(_tensors(a))


def test_a_resumed_run_counts_the_training_time_it_had(photos: Path, tmp_path: Path) -> None:
    """The checkpoint keeps the minutes trained, so a run cut short and resumed keeps its time
    limit (and the learning-rate schedule that follows it) instead of starting them over."""
    out = tmp_path / "run"
    train(_config(photos, out, steps=2))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 0 < state["minutes"] < 5
    state["minutes"] = 30.0  # as if the run had trained for half an hour
    torch.save(state, out / "checkpoint.pt")
    train(_config(photos, out, steps=100, minutes=20))  # its 20 minutes are spent: no step
    after = torch.load(out / "checkpoint.pt", weights_only=True)
    assert after["step"] == 2 and after["minutes"] >= 30


def test_checkpoints_are_written_between_validations(photos: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import rnncodec.train as train_module

    saved: list[int] = []
    real = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint",
                        lambda path, model, opt, step, *a: saved.append(step)
                        or real(path, model, opt, step, *a))
    for minutes, expected in ((10.0, [3, 3]), (0.0, [1, 2, 3, 3])):
        saved.clear()
        train(_config(photos, tmp_path / str(minutes), steps=3, checkpoint_minutes=minutes))
        assert saved == expected  # every step once the interval has passed; the last, always


def test_time_limit_stops_early(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "timed"
    train(_config(photos, out, steps=1000, minutes=1e-9))
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step < 1000
    assert (out / "model.safetensors").is_file()


def test_too_few_images(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    Image.fromarray(gradient_image(130, 130)).save(tmp_path / "data" / "one.png")
    with pytest.raises(InputMissingError, match="no training images"):
        train(_config(tmp_path / "data", tmp_path / "out"))


# --- the command --------------------------------------------------------------------------


def test_cli_train_with_overrides(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-run"
    r = CliRunner().invoke(main, [
        "train", "--data", str(photos), "--out", str(out), "--set", f"width={TINY_WIDTH}",
        "--set", "steps=1", "--set", "iterations=2", "--set", "batch=2", "--set", "patch=32",
        "--set", "val_every=1000", "--set", "resume=false", "--set", "cell=gru",
        "--set", "framework=additive"])
    assert r.exit_code == 0, (r.output, r.exception)
    assert f"weights: {out / 'model.safetensors'}" in r.stdout
    loaded = zoo.load_model(str(out / "model.safetensors"))
    assert loaded.net.config == ModelConfig("gru", "additive", TINY_WIDTH)


@pytest.mark.parametrize("sets, code, match", [
    (["bogus=1"], 2, "unknown setting 'bogus'"),
    (["steps=many"], 2, "steps"),
    (["cell=rnn"], 2, "unknown cell"),
    (["hard_patches=2"], 2, "hard_patches must be in [0, 1]"),
    (["hard_patches=0.5", "bank=1000"], 2, "hard_patches needs patches drawn per step"),
    (["binarize=round"], 2, "binarize must be 'stochastic' or 'sign'"),
    (["patch=40"], 2, "patch must be a multiple of 16"),
    (["patch=0"], 2, "patch must be a multiple of 16"),
    (["val_every=0"], 2, "val_every must be at least 1"),
    (["batch=0"], 2, "batch, iterations and val_every must be at least 1"),
    (["ms_ssim=-1"], 2, "loss weights (l1, ms_ssim, psnr_db, ms_ssim_db, psnr_hvs_db) must be ≥ 0"),
    (["psnr_db=-1"], 2, "loss weights (l1, ms_ssim, psnr_db, ms_ssim_db, psnr_hvs_db) must be ≥ 0"),
    (["l1=0"], 2, "at least one loss weight"),
    (["ms_ssim=1", "patch=32"], 2, "need patches of at least 48 px"),
    (["ms_ssim_db=1", "patch=32"], 2, "need patches of at least 48 px"),
    (["width=9"], 2, "width must be in (0, 4]"),
    (["framework=jpeg"], 2, "unknown framework"),
])
def test_cli_train_bad_settings(sets: list[str], code: int, match: str, photos: Path,
                                tmp_path: Path) -> None:
    args = ["train", "--data", str(photos), "--out", str(tmp_path / "o")]
    for s in sets:
        args += ["--set", s]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == code, (r.output, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnncodec: error: ") and match in lines[0]
    assert "Traceback" not in r.output
    assert not (tmp_path / "o").exists()  # nothing written for a run that cannot start


def test_cli_train_names_a_photo_that_does_not_decode(photos: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(photos, data)
    (data / "broken.jpg").write_bytes(b"not a jpeg")
    r = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    bad = data / "broken.jpg"
    assert r.stderr.splitlines() == [
        f"rnncodec: error: cannot decode {bad} as an image: cannot identify image file '{bad}'"]
    assert not (tmp_path / "o").exists()


def test_cli_train_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "empty"), "--out",
                                  str(tmp_path / "o")])
    assert r.exit_code == 66, (r.output, r.exception)
    expected = f"rnncodec: error: no training images under {tmp_path / 'empty'}"
    assert r.stderr.splitlines() == [expected]


def test_export_ships_fp16_weights_with_both_entropy_tables(photos: Path, tmp_path: Path) -> None:
    from rnncodec.entropy import PRIOR_KEY, make_coder

    out = tmp_path / "run"
    train(_config(photos, out))
    shipped = tmp_path / "shipped.safetensors"
    digest = export(out / "checkpoint.pt", shipped, str(photos), "shipped", images=2,
                    coder_images=2, coder_steps=2, crop=64)
    loaded = zoo.load_model(str(shipped))
    assert loaded.digest == digest and loaded.name == "shipped"
    assert PRIOR_KEY in loaded.tables and "entropy.neural.lut" in loaded.tables
    a = gradient_image(40, 56)
    for coder in ("context", "neural"):
        data = codec.compress(a, iterations=3, model=str(shipped), coder=coder)
        assert codec.info(data).as_dict()["coder"] == coder
        assert codec.decompress(data, model=str(shipped)).size == (56, 40)
    assert codec.info(codec.compress(a, iterations=1, model=str(shipped))).as_dict()[
        "coder"] == "best"  # the default, which may pick the learned coder the model ships
    assert set(make_coder("best", loaded.tables).coders) == {0, 1, 2}
    with pytest.raises(InputMissingError):
        export(out / "checkpoint.pt", tmp_path / "x.safetensors", str(photos), "x",
               images=1, coder_images=1, coder_steps=1, crop=4096)
    again = export(out / "model.safetensors", tmp_path / "again.safetensors", str(photos),
                   "shipped", images=2, coder_images=2, coder_steps=2, crop=64, tune="psnr")
    assert again == digest  # the run's fp16 weights alone export to the same file
    assert loaded.tune == "ms-ssim" and zoo.load_model(str(tmp_path / "again.safetensors")).tune \
        == "psnr"  # the tune is a label beside the weights, outside their digest


# --- training at scale ----------------------------------------------------------------------


def test_larger_crops_train(photos: Path, tmp_path: Path) -> None:
    pool = load_pool(list_images(photos))
    cfg = _config(photos, tmp_path / "big", patch=96, steps=1)
    assert draw_batch(pool, cfg, random.Random(0)).shape == (2, 3, 96, 96)
    train(cfg)
    assert torch.load(tmp_path / "big" / "checkpoint.pt", weights_only=True)["step"] == 1


def test_hard_patch_mining_keeps_the_least_compressible() -> None:
    flat = torch.full((3, 160, 160), 128, dtype=torch.uint8)
    noisy = torch.randint(0, 256, (3, 160, 160), generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    pool = [flat, noisy]
    cfg = TrainConfig(batch=4, patch=32, hard_patches=0.25)  # 16 candidates, keep 4
    rng = random.Random(3)
    candidates = [random_patch(rng.choice(pool), 32, rng) for _ in range(16)]
    batch = draw_batch(pool, cfg, random.Random(3))
    assert batch.shape == (4, 3, 32, 32)
    sizes = sorted((png_size(c) for c in candidates), reverse=True)
    assert sorted((png_size(p) for p in batch), reverse=True) == sizes[:4]
    flat_drawn = sum(float(c.std()) < 0.01 for c in candidates)
    assert flat_drawn >= 4 and 16 - flat_drawn >= 4  # plenty of flat patches were drawn...
    assert all(float(p.std()) > 0.05 for p in batch)  # ...and none was kept
    assert png_size(torch.zeros(3, 32, 32)) < png_size(batch[-1])
    plain = draw_batch(pool, replace(cfg, hard_patches=0.0), random.Random(3))
    assert torch.equal(plain, torch.stack(candidates[:4]))  # off: the usual draw
    with pytest.raises(ValueError, match="hard_patches"):
        TrainConfig(hard_patches=1.5)


def test_amp_runs_a_bf16_step_on_cpu(photos: Path, tmp_path: Path) -> None:
    cfg = _config(photos, tmp_path / "amp", amp=True, steps=1, device="cpu")
    losses = []
    for amp in (False, True):
        torch.manual_seed(0)
        net = RNNCompressor(ModelConfig(width=TINY_WIDTH))
        batch = torch.rand(2, 3, 32, 32) - 0.5
        loss = train_step(net, batch, replace(cfg, amp=amp))
        assert loss.dtype == torch.float32
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
        losses.append(loss.item())
    assert losses[0] != losses[1] and losses[1] == pytest.approx(losses[0], rel=0.05)
    train(cfg)
    assert torch.load(tmp_path / "amp" / "checkpoint.pt", weights_only=True)["step"] == 1


def test_device_auto_resolves_to_the_accelerator_or_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert TrainConfig().device == "auto"


def test_tensorboard_logs_loss_rate_psnr_and_ms_ssim(photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    train(_config(photos, out, tensorboard=True))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "patches_per_s", "val_psnr/it01",
                                             "val_psnr/it02", "val_ms_ssim/it01",
                                             "val_ms_ssim/it02"}
    assert [e.step for e in events.Scalars("loss")] == [2]


def test_tensorboard_missing_falls_back_to_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert tensorboard_writer(tmp_path) is None
    assert "tensorboard is not installed" in capsys.readouterr().out


_DDP_GUARD_S = 120  # seconds before the DDP test gives up on its workers


def _rendezvous_in_files(tmp: Path, rank: int) -> None:
    """Make each process group of this rank meet through a new file in ``tmp`` (file://), not a
    TCP port: a free port chosen in advance can be taken before rank 0 binds it."""
    init, groups = torch.distributed.init_process_group, itertools.count()

    def through_file(backend: str) -> None:
        init(backend, init_method=f"file://{tmp}/rendezvous{next(groups)}", rank=rank,
             world_size=2)

    torch.distributed.init_process_group = through_file


def _ddp_worker(rank: int, photos: str, tmp: str) -> None:
    """One of two CPU ranks; should it hang, the test shows where (these stacks)."""
    with open(Path(tmp) / f"stack{rank}", "w") as stacks:
        faulthandler.dump_traceback_later(_DDP_GUARD_S - 20, file=stacks)
        _ddp_rank(rank, Path(photos), Path(tmp))


def _ddp_rank(rank: int, photos: Path, tmp: Path) -> None:
    """One DDP step on this rank's own batch, then the loop, then a resume."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    _rendezvous_in_files(tmp, rank)
    torch.set_num_threads(1)
    cfg = _config(photos, tmp / "run", device="cpu", minutes=60.0)  # shared clock
    assert setup_distributed(cfg.device) == (rank, 2, torch.device("cpu"))
    net, batch = _seeded_step_inputs(rank)
    loss = train_step(wrap(net, 2, compiled=False), batch, cfg)
    torch.save({"loss": loss.item(), "grads": {n: p.grad for n, p in net.named_parameters()}},
               tmp / f"grads{rank}.pt")
    torch.distributed.destroy_process_group()
    train(cfg)
    train(replace(cfg, steps=3))  # every rank resumes at step 2 (or they would not meet)


def _seeded_step_inputs(rank: int) -> tuple[RNNCompressor, torch.Tensor]:
    """The same initial model on every rank and a batch (and binarizer noise) of its own."""
    torch.manual_seed(0)
    net = RNNCompressor(ModelConfig(width=TINY_WIDTH))
    torch.manual_seed(100 + rank)
    return net, torch.rand(2, 3, 32, 32) - 0.5


def test_ddp_on_two_cpu_ranks_averages_gradients(photos: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.multiprocessing as mp

    # With OMP_WAIT_POLICY=PASSIVE the gloo ranks were seen to hang at exit on this machine.
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    ctx = mp.spawn(_ddp_worker, args=(str(photos), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + _DDP_GUARD_S
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            stacks = "\n".join((tmp_path / f"stack{r}").read_text() for r in range(2))
            pytest.fail(f"the DDP workers hung; their stacks:\n{stacks}")
    ranks = [torch.load(tmp_path / f"grads{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["loss"] != ranks[1]["loss"]  # different batches...
    local = []
    for r in range(2):  # ...whose gradients, computed alone, DDP averages on both ranks
        net, batch = _seeded_step_inputs(r)
        train_step(net, batch, _config(photos, tmp_path))
        local.append({n: p.grad for n, p in net.named_parameters()})
    for name, grad in ranks[0]["grads"].items():
        assert torch.equal(grad, ranks[1]["grads"][name]), name
        assert torch.allclose(grad, (local[0][name] + local[1][name]) / 2, atol=1e-6), name
    out = tmp_path / "run"  # the loop: rank 0 alone logs and checkpoints
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3
    assert [r[0] for r in _log_rows(out)] == ["2", "3"]
    assert (out / "model.safetensors").is_file()


def test_a_run_can_start_from_shipped_weights(photos: Path, tmp_path: Path) -> None:
    first = train(_config(photos, tmp_path / "a"))
    start = zoo.load_model(str(first)).net.state_dict()
    cfg = _config(photos, tmp_path / "b", steps=0, init=str(first))
    second = zoo.load_model(str(train(cfg))).net.state_dict()
    assert all(torch.equal(start[k], second[k]) for k in start)  # 0 steps: the same weights
    with pytest.raises(ModelError, match="not this run's"):
        train(_config(photos, tmp_path / "c", width=TINY_WIDTH / 2, init=str(first)))
    # a wider run grows the weights (frameworks.grow): the same reconstructions to start with
    wide = zoo.load_model(str(train(_config(photos, tmp_path / "d", steps=0, width=0.0625,
                                            init=str(first))))).net
    x = torch.rand(1, 3, 32, 32) - 0.5
    with torch.no_grad():
        a, b = zoo.load_model(str(first)).net.float()(x, 2, False), wide.float()(x, 2, False)
    assert all(torch.allclose(p, q, atol=2e-3) for p, q in zip(a, b, strict=True))
    assert wide.config.width == 0.0625
    coarse = zoo.load_model(str(train(_config(photos, tmp_path / "e", steps=0, coarse=2.0,
                                              init=str(first))))).net
    with torch.no_grad():
        c = coarse.float()(x, 2, False)
    assert all(torch.allclose(p, q, atol=2e-3) for p, q in zip(a, c, strict=True))
    assert (coarse.config.width, coarse.config.coarse) == (TINY_WIDTH, 2.0)


def test_a_run_from_a_checkpoint_carries_its_adam_moments(photos: Path, tmp_path: Path) -> None:
    """``init`` naming another run's checkpoint brings its weights and Adam's moments onto a
    new schedule; parameters the first run did not have (priming gates) start afresh."""
    train(_config(photos, tmp_path / "a"))
    first = tmp_path / "a" / "checkpoint.pt"
    saved = torch.load(first, weights_only=True)
    for prime in (0, 1):
        out = tmp_path / f"b{prime}"
        train(_config(photos, out, steps=0, prime=prime, init=str(first)))
        got = torch.load(out / "checkpoint.pt", weights_only=True)
        assert got["step"] == 0
        names = list(got["model"])  # parameters only: this model has no buffers
        old_names = list(saved["model"])
        moved = {names[i]: v for i, v in got["opt"]["state"].items()}
        assert set(moved) == set(old_names)  # no moments for the priming gates
        for i, name in enumerate(old_names):
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(moved[name][key], saved["opt"]["state"][i][key]), name
        assert all(torch.equal(got["model"][k], saved["model"][k]) for k in old_names)


def test_freeze_early_trains_the_late_networks_alone(photos: Path, tmp_path: Path) -> None:
    """From a plain run's checkpoint the late networks start as copies of the early ones, with
    their Adam moments; only they move, so the early iterations stay as they were."""
    train(_config(photos, tmp_path / "a"))
    first = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    out = tmp_path / "late"
    train(_config(photos, out, steps=2, late_from=2, freeze_early=True, lr=1e-3,
                  init=str(tmp_path / "a" / "checkpoint.pt")))
    got = torch.load(out / "checkpoint.pt", weights_only=True)
    late = [k for k in got["model"] if k.startswith("late.")]
    assert late and len(got["opt"]["state"]) == len(late)
    for k, v in first["model"].items():
        assert torch.equal(got["model"][k], v), k  # the early networks did not move
    assert any(not torch.equal(got["model"][f"late.{k}"], first["model"][k])
               for k in first["model"] if f"late.{k}" in got["model"])
    with pytest.raises(ValueError, match="late_from"):
        _config(photos, out, freeze_early=True)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_patch_rate_and_loss_on_a_terminal(
        photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    train(_config(photos, tmp_path / "bar", steps=10))
    shown = term.getvalue()
    assert "patch/s" in shown and "loss=" in shown and "20.0/20.0" in shown


def test_progress_bar_stays_out_of_logs(photos: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    train(_config(photos, tmp_path / "quiet", steps=2))
    assert "patch/s" not in capsys.readouterr().err


def test_block_stops_stop_good_blocks_for_the_chosen_fraction_only() -> None:
    from rnncodec.train import block_stops

    image = torch.rand(4, 3, 32, 32) - 0.5
    torch.manual_seed(0)
    assert block_stops(0.0)(image, image, None).all()  # uniform images: no block stops
    stopped = block_stops(1.0)(image, image, None)  # a perfect reconstruction: all stop
    assert not stopped.any() and stopped.shape == (4, 1, 2, 2)
    noisy = image + 0.3 * torch.randn_like(image)
    assert block_stops(1.0)(image, noisy, None).all()  # far below every threshold


def test_block_stops_draw_thresholds_once_per_forward() -> None:
    """Later iterations of one forward keep the first one's thresholds, so a block's fate
    depends on its quality alone."""
    from rnncodec.adaptive import SEARCH_STOP_DB
    from rnncodec.train import block_stops

    image = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)) - 0.5
    noise = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    recon = image + torch.logspace(-3, -0.5, 64).view(64, 1, 1, 1) * noise  # ~60 dB to ~10 dB
    stops = block_stops(1.0)
    first = stops(image, recon, None)
    assert 0 < int(first.sum()) < 64  # thresholds spread over SEARCH_STOP_DB
    again = stops(image, recon, torch.ones_like(first))
    assert torch.equal(first, again)
    assert SEARCH_STOP_DB[0] < SEARCH_STOP_DB[1]


def test_train_step_with_stops_runs_and_validates_its_fraction() -> None:
    from conftest import build_tiny

    net = build_tiny().train()
    batch = torch.rand(2, 3, 32, 32) - 0.5
    loss = train_step(net, batch, TrainConfig(iterations=3, binarize="sign", stops=1.0))
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(ValueError, match="stops must be in"):
        TrainConfig(stops=1.5)


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint(photos: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A signal during a step lets the step finish, writes the checkpoint and weights, then
    ends as an interrupt; the run resumes from that step."""
    import os
    import signal

    from rnncodec import train as training

    calls = []
    real_step = training.train_step

    def step_then_signal(net, batch, cfg, *rate):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the third step
        return real_step(net, batch, cfg, *rate)

    monkeypatch.setattr(training, "train_step", step_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    cfg = _config(photos, tmp_path / "run", steps=100)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert signal.getsignal(signal.SIGTERM) is before
    assert len(calls) == 3
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3
    assert (tmp_path / "run" / "model.safetensors").exists()
    monkeypatch.setattr(training, "train_step", real_step)
    train(replace(cfg, steps=5))  # resumes at step 3
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 5


def test_rate_term_trains_the_context_net_fully_and_the_codes_by_its_weight() -> None:
    """The codes' value is unchanged and the context net's gradient does not depend on the
    weight; the codes' gradient is the weight times the one at weight 1."""
    from rnncodec.entropy.neural import ContextNet, code_bits
    from rnncodec.train import rate_term

    torch.manual_seed(0)
    net = ContextNet()
    codes = [torch.where(torch.rand(2, 32, 3, 4) < 0.5, 1.0, -1.0).requires_grad_()
             for _ in range(3)]
    grads = []
    for weight in (1.0, 0.25):
        net.zero_grad()
        bits = rate_term(net, codes, 1, weight)
        assert bits.item() == pytest.approx(code_bits(net, torch.stack(codes, 1), 1).item())
        code_grads = torch.autograd.grad(bits, codes, retain_graph=True)
        bits.backward()
        grads.append((code_grads, [p.grad.clone() for p in net.parameters()]))
    (full, net_full), (quarter, net_quarter) = grads
    for a, b in zip(full, quarter, strict=True):
        torch.testing.assert_close(b, 0.25 * a)
    assert full[0].abs().sum() > 0  # history only, still read by later iterations' bits
    for a, b in zip(net_full, net_quarter, strict=True):
        torch.testing.assert_close(a, b)


def test_rate_counts_the_trained_iterations_and_joins_the_loss() -> None:
    from conftest import build_tiny

    from rnncodec.entropy.neural import ContextNet, code_bits
    from rnncodec.train import rate_first

    assert rate_first(TrainConfig(late_from=9, freeze_early=True)) == 8
    assert rate_first(TrainConfig(late_from=9)) == 0
    net, context = build_tiny().train(), ContextNet()
    batch = torch.rand(2, 3, 32, 32) - 0.5
    cfg = TrainConfig(iterations=2, binarize="sign")
    plain = train_step(net, batch, cfg).item()
    parts: dict[str, float] = {}
    with_rate = train_step(net, batch, replace(cfg, rate=0.1), context, 0.1, parts).item()
    codes: list[torch.Tensor] = []
    with torch.no_grad():
        net(batch, 2, False, None, codes)
        expected = code_bits(context, torch.stack(codes, 1)).item()
    assert parts["bits"] == pytest.approx(expected, rel=1e-5)
    assert with_rate == pytest.approx(plain + expected, rel=1e-5)
    assert all(p.grad is not None for p in context.parameters())
    with pytest.raises(ValueError, match="rate cannot be combined with stops"):
        TrainConfig(rate=0.1, stops=0.5)
    with pytest.raises(ValueError, match="rate must be"):
        TrainConfig(rate=-1.0)


def test_a_run_with_a_rate_term_keeps_its_context_net_across_a_resume(
        photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rate"
    cfg = _config(photos, out, rate=0.05, val_every=2, binarize="sign")
    train(cfg)
    first = torch.load(out / "checkpoint.pt", weights_only=True)
    assert first["context"] and first["context_opt"]["state"]
    assert re.search(r"codes \d\.\d{4} bits/bit", capsys.readouterr().out)
    train(replace(cfg, steps=3))
    second = torch.load(out / "checkpoint.pt", weights_only=True)
    assert second["step"] == 3
    assert second["context_opt"]["state"][0]["step"] == 3  # Adam went on from step 2
    assert any(not torch.equal(second["context"][k], v) for k, v in first["context"].items())
