"""lightning_fm.data images: the image sets (embedded digits, an ImageFolder tree, synthetic images, MNIST through
torchvision on tiny idx files, CelebA's loading path on tiny files, the missing-file and failed-download errors of
the torchvision sets), ImageDataModule / DigitsDataModule / TransferDataModule batches, flips, determinism, DDP
sharding, the evaluation sets and their noise-floor reference, config errors. No network: every download is
monkeypatched to fail."""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import struct
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_fm.data import (
    CelebA64Images,
    CIFAR10Images,
    DigitsDataModule,
    DigitsImages,
    FashionMNISTImages,
    FolderImages,
    ImageDataModule,
    ImageSet,
    MNISTImages,
    SyntheticImages,
    TransferDataModule,
)
from lightning_fm.data.image_sets import load_digit_images, stratified_split
from lightning_fm.data.images import NOISE_CHUNK


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def rows(x):
    return x.flatten(1)


def members(a, b):
    """For each row of ``a``: is it a row of ``b``."""
    return (torch.cdist(rows(a).double(), rows(b).double(), compute_mode="donot_use_mm_for_euclid_dist") == 0).any(1)


def one_epoch(dm):
    return list(dm.train_dataloader())


def synthetic(**kw):
    return SyntheticImages(**{"shape": (3, 8, 8), "n_train": 50, "n_eval": 12, **kw})


# -- the embedded digits ----------------------------------------------------------------------------------------
def test_image_datamodule_on_digits_matches_the_digits_datamodule():
    dm = ImageDataModule(target=DigitsImages(), batch_size=100)
    digits = DigitsDataModule(batch_size=100)
    assert dm.data_shape == (1, 8, 8) and dm.num_classes == 10 and dm.source_is_standard_normal
    train, reference = one_epoch(dm), one_epoch(digits)
    assert len(train) == len(reference) == math.ceil(len(dm.target_train_images()) / 100)
    for b, r in zip(train, reference):
        assert set(b) == {"x0", "x1", "y1"} and all(torch.equal(b[k], r[k]) for k in b)
        assert b["x1"].dtype == b["x0"].dtype == torch.float32 and b["y1"].dtype == torch.int64
        assert b["x1"].min() >= -1 and b["x1"].max() <= 1
    val, digits_val = dm.eval_set("val"), digits.eval_set("val")
    assert set(val) == {"x0", "x1", "x1_ref", "y1"} and all(torch.equal(val[k], digits_val[k]) for k in val)
    train_images = dm.target_train_images()
    assert torch.equal(torch.cat(list(train_images.chunks(256))), train_images.get(torch.arange(len(train_images))))
    assert members(val["x1_ref"], train_images.data).all()


def test_digits_images_restrict_one_split_of_all_1797_digits():
    images, labels = load_digit_images()
    train, val = stratified_split(labels.numpy(), 0.2, seed=3)
    for c in (2, 3):
        splits = DigitsImages(classes=[c], seed=3).splits()
        assert torch.equal(splits["train"].data, images[train][labels[train] == c])
        assert torch.equal(splits["eval"].data, images[val][labels[val] == c])
        assert (splits["train"].labels == c).all() and (splits["eval"].labels == c).all()


# -- flows: shapes, determinism, flips, DDP ----------------------------------------------------------------------
def test_synthetic_images_batches_shapes_dtype_range():
    dm = ImageDataModule(target=synthetic(), batch_size=16, eval_batch_size=5, n_predict=9)
    dm.setup("fit")
    train = one_epoch(dm)
    assert [len(b["x1"]) for b in train] == [16, 16, 16, 2]
    for b in train:
        assert b["x0"].shape == b["x1"].shape and b["x1"].shape[1:] == (3, 8, 8)
        assert b["x1"].dtype == torch.float32 and -1 <= b["x1"].min() and b["x1"].max() <= 1
        assert b["y1"].dtype == torch.int64 and ((0 <= b["y1"]) & (b["y1"] < 10)).all()
    data = dm.target_train_images().data
    assert data.dtype == torch.uint8  # stored as uint8, converted per batch
    seen = torch.cat([b["x1"] for b in train])
    assert torch.equal(rows(seen).sort(0).values, rows(data.float() / 127.5 - 1).sort(0).values)
    val = list(dm.val_dataloader())
    assert [len(b["x1"]) for b in val] == [4, 4, 4] and set(val[0]) == {"x0", "x1", "x1_ref", "y1"}
    pred = list(dm.predict_dataloader())
    assert [set(p) for p in pred] == [{"x0", "y1"}] * 2 and torch.cat([p["x0"] for p in pred]).shape == (9, 3, 8, 8)
    assert torch.equal(torch.cat([p["y1"] for p in pred]), torch.arange(9) % 10)  # balanced classes to generate
    unlabelled = ImageDataModule(target=synthetic(num_classes=0), batch_size=8)
    assert unlabelled.num_classes == 0 and set(one_epoch(unlabelled)[0]) == {"x0", "x1"}
    assert set(unlabelled.eval_set("val")) == {"x0", "x1", "x1_ref"}


def test_determinism_seeds_and_epochs():
    def make(**kw):
        return ImageDataModule(target=synthetic(), batch_size=16, hflip=True, **kw)

    a, b = make(), make()
    a0, b0 = one_epoch(a), one_epoch(b)
    assert all(torch.equal(p[k], q[k]) for p, q in zip(a0, b0) for k in p)
    a1 = one_epoch(a)  # the next pass without a trainer: epoch 1
    assert not torch.equal(a0[0]["x1"], a1[0]["x1"]) and not torch.equal(a0[0]["x0"], a1[0]["x0"])
    assert not torch.equal(a0[0]["x1"], one_epoch(make(seed=1))[0]["x1"])
    # evaluation sets are fixed, and the fixed noise of a row does not depend on how the set is batched
    whole = a.eval_set("val")
    assert all(torch.equal(whole[k], make().eval_set("val")[k]) for k in whole)
    small = list(make(eval_batch_size=5).val_dataloader())
    assert all(torch.equal(torch.cat([s[k] for s in small]), whole[k]) for k in whole)


def test_fixed_noise_rows_are_standard_normal_and_stable_in_n():
    dm = ImageDataModule(target=synthetic(), n_predict=3 * NOISE_CHUNK + 7)
    x0 = dm.predict_set()["x0"]
    assert abs(float(x0.mean())) < 0.02 and abs(float(x0.std()) - 1) < 0.02
    fewer = ImageDataModule(target=synthetic(), n_predict=NOISE_CHUNK + 3).predict_set()["x0"]
    assert torch.equal(fewer, x0[: NOISE_CHUNK + 3])


def test_horizontal_flips_are_random_reproducible_and_off_by_default():
    plain = one_epoch(ImageDataModule(target=synthetic(), batch_size=50))[0]
    flipped = one_epoch(ImageDataModule(target=synthetic(), batch_size=50, hflip=True))[0]
    assert torch.equal(plain["x0"], flipped["x0"]) and torch.equal(plain["y1"], flipped["y1"])  # same order, noise
    same = (rows(flipped["x1"]) == rows(plain["x1"])).all(1)
    mirrored = (rows(flipped["x1"]) == rows(plain["x1"].flip(-1))).all(1)
    assert (same | mirrored).all() and 10 <= int(mirrored.sum()) <= 40 and not (same & mirrored).any()
    again = one_epoch(ImageDataModule(target=synthetic(), batch_size=50, hflip=True))[0]
    assert torch.equal(again["x1"], flipped["x1"])
    data = ImageDataModule(target=synthetic()).target_train_images().get(torch.arange(50))
    assert members(plain["x1"], data).all()  # hflip=False: every image as stored
    assert not members(flipped["x1"][mirrored], data).any()
    digits = DigitsDataModule(batch_size=2000)
    assert members(digits.train_set().make_batch(0)["x1"], digits.splits["train"][0]).all()  # never mirrored


def test_ddp_ranks_share_one_permutation_and_run_as_many_steps():
    for n_train, batch_size in ((50, 8), (51, 8)):
        dm = ImageDataModule(target=synthetic(n_train=n_train), batch_size=batch_size)
        ranks = []
        for rank in range(2):
            ds = dm.train_set()
            ds.set_epoch_state(3, rank, 2)
            ranks.append([ds.make_batch(k) for k in range(len(ds))])
        assert len(ranks[0]) == len(ranks[1]) == math.ceil(math.ceil(n_train / 2) / batch_size)
        seen = [torch.cat([b["x1"] for b in r]) for r in ranks]
        assert len(seen[0]) == len(seen[1]) == math.ceil(n_train / 2)
        overlap = int(members(seen[0], seen[1]).sum())
        assert overlap == (n_train % 2)  # disjoint; an odd set pads one image, like DistributedSampler
        data = dm.target_train_images().get(torch.arange(n_train))
        assert members(data, torch.cat(seen)).all()  # together: the whole training split
        assert not torch.equal(ranks[0][0]["x0"], ranks[1][0]["x0"])  # each rank its own noise
    # epoch and rank come from the trainer when one is attached
    dm = ImageDataModule(target=synthetic(), batch_size=8)
    dm.trainer = SimpleNamespace(current_epoch=3, global_rank=1, world_size=2)
    ds = dm.train_set()
    ds.set_epoch_state(3, 1, 2)
    assert len(dm.train_dataloader()) == 4 and torch.equal(one_epoch(dm)[0]["x1"], ds.make_batch(0)["x1"])


def test_evaluation_sets_reference_comes_from_training_and_caps():
    dm = ImageDataModule(target=synthetic(n_train=40, n_eval=30), n_val=20)
    splits = dm.target.splits()
    train, held_out = (splits[k].get(torch.arange(len(splits[k]))) for k in ("train", "eval"))
    val, test = dm.eval_set("val"), dm.eval_set("test")
    assert len(val["x1"]) == 20 and members(val["x1"], held_out).all()
    assert members(val["x1_ref"], train).all() and not members(val["x1_ref"], held_out).any()
    assert len(torch.unique(rows(val["x1_ref"]), dim=0)) == 20  # without replacement
    assert torch.equal(test["x1"], val["x1"]) and not torch.equal(test["x0"], val["x0"])
    assert not torch.equal(test["x1_ref"], val["x1_ref"])
    assert torch.equal(val["y1"], splits["eval"].labels[members(held_out, val["x1"])])
    assert len(ImageDataModule(target=synthetic(n_train=40, n_eval=30)).eval_set("val")["x1"]) == 30
    too_many = ImageDataModule(target=synthetic(n_train=10, n_eval=30))
    with pytest.raises(ValueError, match="data.n_val"):
        too_many.setup("fit")


# -- transfer ------------------------------------------------------------------------------------------------------
def test_transfer_digits_2_to_3():
    dm = TransferDataModule(source=DigitsImages(classes=[2]), target=DigitsImages(classes=[3]), batch_size=32)
    assert not dm.source_is_standard_normal and dm.source_shape == dm.target_shape == (1, 8, 8)
    images, labels = load_digit_images()
    train, val = stratified_split(labels.numpy(), 0.2, seed=0)
    digit = {(c, s): images[index][labels[index] == c] for c in (2, 3) for s, index in (("train", train), ("val", val))}
    epoch = one_epoch(dm)
    assert sum(len(b["x1"]) for b in epoch) == len(digit[3, "train"])
    for b in epoch:
        assert set(b) == {"x0", "x1", "y0", "y1"} and (b["y0"] == 2).all() and (b["y1"] == 3).all()
        assert members(b["x0"], digit[2, "train"]).all() and members(b["x1"], digit[3, "train"]).all()
    for stage in ("val", "test"):
        ev = dm.eval_set(stage)
        assert set(ev) == {"x0", "x1", "x1_ref", "y0", "y1"} and len(ev["x0"]) == len(ev["x1"]) == len(ev["x1_ref"])
        assert len(ev["x0"]) == min(len(digit[2, "val"]), len(digit[3, "val"]))
        assert (ev["y0"] == 2).all() and (ev["y1"] == 3).all()
        assert members(ev["x0"], digit[2, "val"]).all() and members(ev["x1"], digit[3, "val"]).all()
        assert members(ev["x1_ref"], digit[3, "train"]).all()
    assert len(np.intersect1d(train, val)) == 0  # train / val disjoint: one stratified split of the 1797 digits
    (pred,) = list(dm.predict_dataloader())
    assert set(pred) == {"x0"} and members(pred["x0"], digit[2, "val"]).all()


def test_transfer_uses_both_sides_uniformly_and_flips_both():
    for n_source, n_target in ((20, 50), (50, 20)):
        dm = TransferDataModule(
            source=synthetic(n_train=n_source, seed=1), target=synthetic(n_train=n_target), batch_size=7
        )
        ds = dm.train_set()
        target_order, source_order = ds.orders()
        assert torch.equal(target_order.sort().values, torch.arange(n_target))
        counts = torch.bincount(source_order, minlength=n_source)
        assert counts.max() - counts.min() <= 1 and int(counts.sum()) == n_target
        epoch = one_epoch(dm)
        assert members(torch.cat([b["x0"] for b in epoch]), dm.source_train_images().get(torch.arange(n_source))).all()
    plain = one_epoch(TransferDataModule(source=synthetic(seed=1), target=synthetic(), batch_size=50))[0]
    flipped = one_epoch(TransferDataModule(source=synthetic(seed=1), target=synthetic(), batch_size=50, hflip=True))[0]
    for key in ("x0", "x1"):
        mirrored = (rows(flipped[key]) == rows(plain[key].flip(-1))).all(1)
        assert 10 <= int(mirrored.sum()) <= 40


def test_transfer_config_errors():
    with pytest.raises(ValueError, match=r"data.source.*\(1, 8, 8\).*data.target.*\(3, 8, 8\)"):
        TransferDataModule(source=DigitsImages(classes=[2]), target=synthetic())
    with pytest.raises(ValueError, match="data.source is required"):
        TransferDataModule(source=None, target=synthetic())
    with pytest.raises(ValueError, match="data.source.classes"):
        TransferDataModule(source=DigitsImages(classes=[12]), target=DigitsImages(classes=[3]))


# -- an ImageFolder tree -------------------------------------------------------------------------------------------
def write_digit_folder(root, classes=(0, 1), mode="L"):
    images, labels = load_digit_images()
    pixels = {}
    for c in classes:
        (root / f"digit{c}").mkdir(parents=True)
        chosen = images[labels == c][:20]
        u8 = torch.round((chosen + 1) * 127.5).to(torch.uint8)
        for i, image in enumerate(u8):
            Image.fromarray(image[0].numpy(), mode="L").convert(mode).save(root / f"digit{c}" / f"{i:03d}.png")
        pixels[c] = u8
    return pixels


def test_folder_images_on_digit_pngs(tmp_path):
    pixels = write_digit_folder(tmp_path / "digits")
    folder = FolderImages(str(tmp_path / "digits"), val_fraction=0.25)
    dm = ImageDataModule(target=folder, batch_size=8)
    assert dm.data_shape == (1, 8, 8) and dm.num_classes == 2
    dm.setup("fit")
    splits = folder.splits()
    assert len(splits["train"]) == 30 and len(splits["eval"]) == 10
    for c in (0, 1):  # labels are the folders; pixels come back as u8 / 127.5 - 1
        expected = pixels[c].float() / 127.5 - 1
        for split in splits.values():
            assert members(split.get(torch.nonzero(split.labels == c).flatten()), expected).all()
    train = torch.cat([b["x1"] for b in one_epoch(dm)])
    assert len(train) == 30 and train.dtype == torch.float32
    val = dm.eval_set("val")
    assert (
        not members(val["x1"], val["x1_ref"]).all()
        and members(val["x1_ref"], splits["train"].get(torch.arange(30))).all()
    )
    # decoded per batch (lazy), also by DataLoader workers: the same batches
    lazy = ImageDataModule(
        target=FolderImages(str(tmp_path / "digits"), val_fraction=0.25, in_memory=False), batch_size=8, num_workers=2
    )
    assert lazy.target_train_images().lazy
    lazy_train = one_epoch(lazy)
    assert torch.equal(torch.cat([b["x1"] for b in lazy_train]), train)
    assert all(torch.equal(lazy.eval_set("val")[k], val[k]) for k in val)
    assert torch.equal(torch.cat([b["x1"] for b in lazy.val_dataloader()]), val["x1"])


def test_folder_images_rgb_resize_and_errors(tmp_path):
    write_digit_folder(tmp_path / "rgb", mode="RGB")
    rgb = ImageDataModule(target=FolderImages(str(tmp_path / "rgb"), image_size=16))
    assert rgb.data_shape == (3, 16, 16)
    b = one_epoch(rgb)[0]
    assert b["x1"].shape[1:] == (3, 16, 16) and torch.equal(b["x1"][:, 0], b["x1"][:, 2])  # gray pixels in RGB
    assert ImageDataModule(target=FolderImages(str(tmp_path / "rgb"), channels=1)).data_shape == (1, 8, 8)
    Image.new("L", (9, 8)).save(tmp_path / "rgb" / "digit0" / "odd.png")
    with pytest.raises(ValueError, match="odd.png.*image_size"):
        ImageDataModule(target=FolderImages(str(tmp_path / "rgb"))).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"data.target.path.*nowhere.*<path>/<class>/"):
        ImageDataModule(target=FolderImages(str(tmp_path / "nowhere"))).setup("fit")
    with pytest.raises(ValueError, match="data.target.val_fraction"):
        ImageDataModule(target=FolderImages(str(tmp_path / "rgb"), val_fraction=1.5))
    with pytest.raises(ValueError, match="data.source.channels"):
        ImageDataModule(target=synthetic(), source=FolderImages(str(tmp_path / "rgb"), channels=2))


# -- torchvision: MNIST on tiny idx files, CelebA's loading path, missing files and failed downloads ---------------
def idx_bytes(array: np.ndarray) -> bytes:
    """The MNIST idx format: magic (0, 0, type 0x08 = uint8, ndim), big-endian sizes, raw bytes."""
    return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(raw, n_train=30, n_test=12, gz=False):
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[prefix] = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10)
        for kind, array in zip(("images-idx3", "labels-idx1"), arrays[prefix]):
            data, name = idx_bytes(array), f"{prefix}-{kind}-ubyte"
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize(
    "cls, folder, gz",
    [(MNISTImages, "MNIST", False), (MNISTImages, "MNIST", True), (FashionMNISTImages, "FashionMNIST", False)],
)
def test_mnist_through_torchvision_on_tiny_idx_files(tmp_path, cls, folder, gz):
    arrays = write_mnist(tmp_path / folder / "raw", gz=gz)
    dm = ImageDataModule(target=cls(root=str(tmp_path)), batch_size=8, n_val=5)
    assert dm.data_shape == (1, 28, 28) and dm.num_classes == 10
    dm.setup("fit")
    train, held_out = dm.target.splits()["train"], dm.target.splits()["eval"]
    assert len(train) == 30 and len(held_out) == 12 and train.data.dtype == torch.uint8
    assert torch.equal(train.data[:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(held_out.labels, torch.from_numpy(arrays["t10k"][1]).long())
    b = one_epoch(dm)[0]
    assert b["x1"].shape == (8, 1, 28, 28) and b["x1"].min() >= -1 and b["x1"].max() <= 1
    assert len(dm.eval_set("val")["x1"]) == 5
    only = cls(root=str(tmp_path), classes=[3, 4]).splits()["train"]
    assert set(only.labels.tolist()) == {3, 4} and len(only) == 6


def missing_message(image_set) -> str:
    with pytest.raises(FileNotFoundError) as err:
        ImageDataModule(target=image_set).setup("fit")
    return str(err.value)


def test_missing_files_name_the_folder_the_files_and_download(tmp_path):
    message = missing_message(MNISTImages(root=str(tmp_path)))
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "t10k-labels-idx1-ubyte" in message and ".gz" in message
    message = missing_message(CIFAR10Images(root=str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py") in message and "cifar-10-python.tar.gz" in message
    assert all(name in message for name in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"))
    message = missing_message(CelebA64Images(root=str(tmp_path)))
    assert str(tmp_path / "celeba") in message and "img_align_celeba/" in message
    assert all(
        name in message
        for name in (
            "list_eval_partition.txt",
            "identity_CelebA.txt",
            "list_attr_celeba.txt",
            "list_bbox_celeba.txt",
            "list_landmarks_align_celeba.txt",
        )
    )
    for m in (missing_message(MNISTImages(root=str(tmp_path))), message):
        assert "data.target.download: true on a machine with internet" in m
    # files present but not what torchvision's checksums expect
    (tmp_path / "cifar-10-batches-py").mkdir()
    for name in CIFAR10Images.files:
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(b"not cifar")
    assert "torchvision rejects the CIFAR-10 files" in missing_message(CIFAR10Images(root=str(tmp_path)))


@pytest.mark.parametrize(
    "image_set, where",
    [(MNISTImages, "ossci-datasets"), (CIFAR10Images, "cs.toronto.edu"), (CelebA64Images, "Google Drive")],
)
def test_failed_downloads_name_the_url_and_the_folder(tmp_path, monkeypatch, image_set, where):
    import torchvision.datasets.celeba
    import torchvision.datasets.utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", no_network)
    monkeypatch.setattr(torchvision.datasets.celeba, "download_file_from_google_drive", no_network)
    dm = ImageDataModule(target=image_set(root=str(tmp_path), download=True))
    with pytest.raises(RuntimeError, match="downloading") as err:
        dm.prepare_data()
    assert where in str(err.value) and str(tmp_path) in str(err.value) and "download: false" in str(err.value)
    ImageDataModule(target=image_set(root=str(tmp_path))).prepare_data()  # download: false never downloads


def write_tiny_celeba(folder, n=6):
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / "img_align_celeba" / name)
    partition = [0, 0, 0, 1, 1, 2]
    (folder / "list_eval_partition.txt").write_text("".join(f"{m} {p}\n" for m, p in zip(names, partition)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{m} {i}\n" for i, m in enumerate(names)))
    for name, header in (
        ("list_attr_celeba.txt", "Smiling"),
        ("list_bbox_celeba.txt", "x_1 y_1"),
        ("list_landmarks_align_celeba.txt", "lefteye_x lefteye_y"),
    ):
        cols = len(header.split())
        (folder / name).write_text(f"{n}\n{header}\n" + "".join(f"{m} " + " ".join(["1"] * cols) + "\n" for m in names))
    return names


def test_celeba64_loading_path_on_tiny_files(tmp_path, monkeypatch):
    import torchvision.datasets.celeba

    write_tiny_celeba(tmp_path / "celeba")
    monkeypatch.setattr(torchvision.datasets.celeba, "check_integrity", lambda *a, **k: True)  # the files' MD5s
    dm = ImageDataModule(target=CelebA64Images(root=str(tmp_path)), batch_size=2, hflip=True)
    assert dm.data_shape == (3, 64, 64) and dm.num_classes == 0
    dm.setup("fit")
    train, held_out = dm.target.splits()["train"], dm.target.splits()["eval"]
    assert train.lazy and len(train) == 3 and len(held_out) == 2
    assert len(CelebA64Images(root=str(tmp_path), eval_split="test").splits()["eval"]) == 1
    b = one_epoch(dm)[0]
    assert set(b) == {"x0", "x1"} and b["x1"].shape == (2, 3, 64, 64) and b["x1"].min() >= -1
    # centre crop 140 of the 178x218 image, resized to 64
    with Image.open(tmp_path / "celeba" / "img_align_celeba" / "000004.jpg") as image:
        crop = image.convert("RGB").crop((19, 39, 159, 179)).resize((64, 64), Image.BILINEAR)
    expected = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 127.5 - 1
    assert (held_out.get(torch.tensor([0]))[0] - expected).abs().max() < 0.05
    assert set(dm.eval_set("val")) == {"x0", "x1", "x1_ref"}


# -- components as specs, config errors, the CLI ---------------------------------------------------------------------
def test_image_sets_are_stored_as_specs_and_rebuilt():
    dm = ImageDataModule(target=synthetic(), source=None, hflip=True, batch_size=8)
    spec = dm.hparams["target"]
    assert spec["class_path"].endswith("SyntheticImages") and spec["init_args"]["n_train"] == 50
    again = ImageDataModule(**dict(dm.hparams))
    assert isinstance(again.target, ImageSet) and torch.equal(one_epoch(again)[0]["x1"], one_epoch(dm)[0]["x1"])
    transfer = TransferDataModule(source=DigitsImages(classes=[2]), target=DigitsImages(classes=[3]))
    assert TransferDataModule(**dict(transfer.hparams)).source.init_args == {
        "classes": [2],
        "val_fraction": 0.2,
        "seed": 0,
    }
    assert set(DigitsDataModule(classes=[1]).hparams) == {
        "classes",
        "val_fraction",
        "n_predict",
        "batch_size",
        "eval_batch_size",
        "seed",
        "num_workers",
        "n_val",
    }


@pytest.mark.parametrize(
    "kwargs, error, key",
    [
        ({"n_val": 0}, ValueError, "data.n_val"),
        ({"n_predict": 0}, ValueError, "data.n_predict"),
        ({"hflip": "yes"}, TypeError, "data.hflip"),
        ({"batch_size": 0}, ValueError, "data.batch_size"),
        ({"target": None}, TypeError, "data.target"),
        ({"target": "cifar"}, TypeError, "data.target"),
        ({"target": DigitsImages(classes=[11])}, ValueError, "data.target.classes"),
        ({"target": DigitsImages(val_fraction=0)}, ValueError, "data.target.val_fraction"),
        ({"target": SyntheticImages(shape=(3, 32))}, ValueError, "data.target.shape"),
        ({"target": SyntheticImages(n_train=0)}, ValueError, "data.target.n_train"),
        ({"target": CIFAR10Images(download="yes")}, TypeError, "data.target.download"),
        ({"target": CIFAR10Images(classes=[10])}, ValueError, "data.target.classes"),
        ({"target": CelebA64Images(eval_split="val")}, ValueError, "data.target.eval_split"),
        ({"source": MNISTImages(classes=[])}, ValueError, "data.source.classes"),
    ],
)
def test_bad_config_values_name_the_key(kwargs, error, key):
    with pytest.raises(error, match=key.replace(".", r"\.")):
        ImageDataModule(**{"target": synthetic(shape=(1, 28, 28)), **kwargs})


def test_cli_finds_the_image_datamodule_and_sets_by_short_name(capsys, monkeypatch):
    import sys

    import yaml

    from lightning_fm.cli import main

    monkeypatch.setattr(sys, "argv", ["lightning_fm"])

    with contextlib.suppress(SystemExit):
        main(
            [
                "fit",
                "--data",
                "ImageDataModule",
                "--data.target",
                "SyntheticImages",
                "--data.target.n_train",
                "64",
                "--data.hflip",
                "true",
                "--print_config",
            ]
        )
    data = yaml.safe_load(io.StringIO(capsys.readouterr().out))["data"]
    assert data["class_path"] == "lightning_fm.data.ImageDataModule" and data["init_args"]["hflip"] is True
    assert data["init_args"]["target"]["class_path"] == "lightning_fm.data.SyntheticImages"
    assert data["init_args"]["target"]["init_args"]["n_train"] == 64
