"""The digits classifier (accuracy, real vs noise, FD between halves, cache) and the ClassifierMetrics callback."""

from types import SimpleNamespace

import pytest
import torch
from lightning import Trainer

from lightning_fm.callbacks import ClassifierMetrics
from lightning_fm.callbacks.classifier_metrics import training_images
from lightning_fm.data import DigitsDataModule
from lightning_fm.data.digits import load_digit_images, stratified_split
from lightning_fm.metrics import classifier as classifier_module
from lightning_fm.metrics import frechet_distance, load_or_train_classifier
from lightning_fm.metrics.classifier import classifier_cache_path
from lightning_fm.models import MLP
from lightning_fm.modules import CFMModule


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("classifier_cache")


@pytest.fixture(scope="module")
def split():
    images, labels = load_digit_images()
    train, val = stratified_split(labels.numpy(), 0.2, seed=0)
    return {"train": (images[train], labels[train]), "val": (images[val], labels[val])}


@pytest.fixture(scope="module")
def classifier(cache, split):
    return load_or_train_classifier(*split["train"], cache_dir=cache)  # trained once for this file (seconds)


def _noise(n, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def _confidence(model, images):
    with torch.no_grad():
        return float(model(images).softmax(1).amax(1).mean())


def test_the_data_module_split_is_the_stratified_split(split):
    splits = DigitsDataModule().splits
    for name in ("train", "val"):
        assert torch.equal(splits[name][0], split[name][0]) and torch.equal(splits[name][1], split[name][1])


@pytest.mark.slow
def test_classifier_is_accurate_on_the_held_out_digits(classifier, split):
    images, labels = split["val"]
    with torch.no_grad():
        accuracy = float((classifier(images).argmax(1) == labels).float().mean())
    assert accuracy >= 0.95
    assert not classifier.training and not any(p.requires_grad for p in classifier.parameters())


@pytest.mark.slow
def test_classifier_takes_any_image_size(classifier):
    x = torch.zeros(2, 1, 28, 28)  # MNIST-sized: global pooling makes the features size-agnostic
    assert classifier.features(x).shape == (2, 64) and classifier(x).shape == (2, 10)
    with pytest.raises(ValueError, match=r"takes images \(B, 1, H, W\)"):
        classifier(torch.zeros(2, 3, 8, 8))


@pytest.mark.slow
def test_classifier_features_separate_real_digits_from_noise(classifier, split):
    (train, _), (val, _) = split["train"], split["val"]
    noise = _noise(len(val))
    # real held-out digits are classified with clearly more confidence than clipped N(0, I) noise
    assert _confidence(classifier, val) > _confidence(classifier, noise) + 0.05
    with torch.no_grad():
        f_val, f_noise = classifier.features(val), classifier.features(noise)
        subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[: len(val)]
        f_train = classifier.features(train[subset])
    floor, noise_fd = frechet_distance(f_train, f_val), frechet_distance(f_noise, f_val)
    assert noise_fd > 20 * floor > 0  # noise is far from the digits; an independent real sample is close


@pytest.mark.slow
def test_fd_between_two_halves_of_one_split_is_small_relative_to_noise(classifier, split):
    # Two random halves (~180 images each) of the held-out split come from one distribution: their FD is only the
    # finite-sample bias of means and 64-dimensional covariances estimated from 180 images (the mean term alone
    # contributes tr(S) (1/n_a + 1/n_b)), while noise is hundreds of units away. Measured over 40 random halvings:
    # 1% to 5.5% of FD(noise, real), 2% on average; the bound 10% leaves about twice the worst case as margin.
    val = split["val"][0]
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = classifier.features(val)
        half = frechet_distance(features[order[::2]], features[order[1::2]])
        noise = frechet_distance(classifier.features(_noise(len(val), 3)), features)
    assert 0 < half < 0.10 * noise
    assert abs(frechet_distance(features, features)) < 1e-8 * noise


@pytest.mark.slow  # trains the digits classifier twice
def test_cache_loads_without_retraining_and_a_different_split_or_setting_retrains(
    cache, split, classifier, monkeypatch
):
    images, labels = split["train"]
    path = classifier_cache_path(images, labels, cache)
    assert path.exists() and not list(path.parent.glob("*.tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("retrained although a cached classifier exists")

    monkeypatch.setattr(classifier_module, "train_classifier", fail)
    again = load_or_train_classifier(images, labels, cache_dir=cache)
    loaded = again.state_dict()
    assert loaded.keys() == classifier.state_dict().keys()
    assert all(torch.equal(value, loaded[key]) for key, value in classifier.state_dict().items())
    assert classifier_cache_path(images, labels, cache, epochs=20) == path  # the default, spelled out
    all_images, all_labels = load_digit_images()
    other_train, _ = stratified_split(all_labels.numpy(), 0.2, seed=1)
    for other in (
        classifier_cache_path(all_images[other_train], all_labels[other_train], cache),
        classifier_cache_path(images, labels, cache, epochs=5),
        classifier_cache_path(images, labels, cache, seed=1),
    ):
        assert other != path and other.parent == path.parent
    with pytest.raises(AssertionError, match="retrained"):  # a file that is not there is trained
        load_or_train_classifier(images, labels, cache_dir=cache, epochs=5)
    monkeypatch.setenv("LIGHTNING_FM_CACHE", str(cache / "elsewhere"))
    assert classifier_cache_path(images, labels).parent == cache / "elsewhere" / "classifiers"
    with pytest.raises(TypeError, match="unknown classifier settings"):
        classifier_cache_path(images, labels, cache, epoch=3)


# -- the callback, driven without a Trainer -------------------------------------------------------------------------
class FakeModule:
    def __init__(self, num_classes=0):
        self.num_classes, self.device, self.logged = num_classes, torch.device("cpu"), {}

    def log_dict(self, values, **kwargs):
        assert kwargs.get("sync_dist") is True
        self.logged.update({k: float(v) for k, v in values.items()})


def _validate(callback, trainer, module, batch, generated, sizes=(100, 159, 100)):
    """One validation pass over ``batch`` in uneven batches, ``generated`` standing in for the model's samples."""
    callback.on_validation_epoch_start(trainer, module)
    start = 0
    for k, size in enumerate(sizes):
        part = {key: value[start : start + size] for key, value in batch.items()}
        callback.on_validation_batch_end(trainer, module, {"generated": generated[start : start + size]}, part, k)
        start += size
    callback.on_validation_epoch_end(trainer, module)
    return dict(module.logged)


@pytest.fixture(scope="module")
def digits_setup(cache):
    data = DigitsDataModule()
    trainer = SimpleNamespace(
        datamodule=data,
        sanity_checking=False,
        world_size=1,
        is_global_zero=True,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    callback = ClassifierMetrics(cache_dir=str(cache))
    callback.setup(trainer, FakeModule(), "fit")
    return callback, trainer, data.eval_set("val")


@pytest.mark.slow
def test_callback_on_real_targets_scores_zero_fd_and_the_classifier_accuracy(digits_setup, classifier):
    callback, trainer, batch = digits_setup
    assert len(batch["x1"]) == 359
    module = FakeModule(num_classes=10)
    logged = _validate(callback, trainer, module, batch, batch["x1"])
    with torch.no_grad():
        f_target, f_ref = classifier.features(batch["x1"]), classifier.features(batch["x1_ref"])
        probabilities = classifier(batch["x1"]).softmax(1)
    noise_fd = frechet_distance(classifier.features(_noise(359)), f_target)
    assert set(logged) == {"val/fd", "val/fd_floor", "val/class_coverage", "val/confidence", "val/label_accuracy"}
    assert abs(logged["val/fd"]) < 1e-6 * noise_fd  # the generated set IS the target set (float32 logging)
    assert logged["val/fd_floor"] == pytest.approx(frechet_distance(f_ref, f_target), rel=1e-5)
    assert logged["val/confidence"] == pytest.approx(float(probabilities.amax(1).mean()), rel=1e-5)
    accuracy = float((probabilities.argmax(1) == batch["y1"]).double().mean())
    assert logged["val/label_accuracy"] == pytest.approx(accuracy, abs=1e-6) and accuracy >= 0.95
    assert logged["val/class_coverage"] == 1.0  # every digit has ~36 of 359 images, the threshold is 18


@pytest.mark.slow
def test_callback_on_noise_reports_what_a_broken_model_would(digits_setup, classifier):
    callback, trainer, batch = digits_setup
    noise = _noise(359, seed=5)
    logged = _validate(callback, trainer, FakeModule(num_classes=0), batch, noise)
    assert "val/label_accuracy" not in logged  # unconditional model on noise -> digits
    with torch.no_grad():
        predicted = classifier(noise).argmax(1)
        f_noise, f_target = classifier.features(noise), classifier.features(batch["x1"])
    counts = torch.bincount(predicted, minlength=10)
    assert logged["val/class_coverage"] == pytest.approx(float((counts >= 359 / 20).double().mean()))
    assert logged["val/class_coverage"] < 1.0
    assert logged["val/fd"] == pytest.approx(frechet_distance(f_noise, f_target), rel=1e-5)
    assert logged["val/fd"] > 20 * logged["val/fd_floor"]


def test_callback_skips_the_sanity_check_and_honours_every_n_validations(digits_setup):
    callback, trainer, batch = digits_setup
    sparse = ClassifierMetrics(cache_dir=callback.cache_dir, every_n_validations=2)
    sparse.classifier, sparse.target_classes = callback.classifier, callback.target_classes
    sanity = SimpleNamespace(**{**vars(trainer), "sanity_checking": True})
    assert _validate(sparse, sanity, FakeModule(), batch, batch["x1"]) == {}
    assert "val/fd" in _validate(sparse, trainer, FakeModule(), batch, batch["x1"])  # validation 1
    assert _validate(sparse, trainer, FakeModule(), batch, batch["x1"]) == {}  # validation 2: skipped
    assert "val/fd" in _validate(sparse, trainer, FakeModule(), batch, batch["x1"])  # validation 3
    module = FakeModule()  # tests are always measured, under test/
    sparse.on_test_epoch_start(trainer, module)
    sparse.on_test_batch_end(trainer, module, {"generated": batch["x1"]}, batch, 0)
    sparse.on_test_epoch_end(trainer, module)
    assert set(module.logged) == {"test/fd", "test/fd_floor", "test/class_coverage", "test/confidence"}


@pytest.mark.slow
def test_transfer_reports_the_fraction_generated_in_the_target_class(cache):
    from lightning_fm.data import DigitsImages, TransferDataModule

    data = TransferDataModule(DigitsImages(classes=[2]), DigitsImages(classes=[3]))  # digits 2 -> digits 3
    trainer = SimpleNamespace(
        datamodule=data,
        sanity_checking=False,
        world_size=1,
        is_global_zero=True,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    callback = ClassifierMetrics(cache_dir=str(cache))
    callback.setup(trainer, FakeModule(), "fit")  # trained on the source's 2s and the target's 3s
    assert callback.target_classes.tolist() == [3]
    batch = data.eval_set("val")
    perfect = _validate(callback, trainer, FakeModule(), batch, batch["x1"], sizes=(20, 15))
    unmoved = _validate(callback, trainer, FakeModule(), batch, batch["x0"], sizes=(35,))
    with torch.no_grad():
        as_three = [float((callback.classifier(x).argmax(1) == 3).double().mean()) for x in (batch["x1"], batch["x0"])]
    assert perfect["val/target_class_fraction"] == pytest.approx(as_three[0], abs=1e-6) and as_three[0] > 0.9
    assert unmoved["val/target_class_fraction"] == pytest.approx(as_three[1], abs=1e-6) and as_three[1] < 0.1
    assert perfect["val/class_coverage"] == 1.0 and unmoved["val/class_coverage"] == 0.0
    assert unmoved["val/fd"] > 20 * unmoved["val/fd_floor"]


def test_callback_rejects_rgb_data_and_data_without_training_images():
    rgb = SimpleNamespace(data_shape=(3, 8, 8), target_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="remove lightning_fm.callbacks.ClassifierMetrics"):
        ClassifierMetrics().setup(SimpleNamespace(datamodule=rgb), FakeModule(), "fit")

    class Points:
        target_shape = (1, 8, 8)

    with pytest.raises(TypeError, match="training images of Points"):
        ClassifierMetrics().setup(SimpleNamespace(datamodule=Points()), FakeModule(), "fit")
    with pytest.raises(ValueError, match="needs a data module"):
        ClassifierMetrics().setup(SimpleNamespace(datamodule=None), FakeModule(), "fit")
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        ClassifierMetrics(every_n_validations=0)


def test_training_images_reads_an_image_split():
    images, labels = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])

    class WithSplit:  # the ImageDataModule form: an object with .labels and .chunks()
        def target_train_images(self):
            return SimpleNamespace(labels=labels, chunks=lambda size=1024: iter([images[:3], images[3:]]))

    got_images, got_labels = training_images(WithSplit())
    assert torch.equal(got_images, images) and torch.equal(got_labels, labels)


def test_callback_in_a_real_fast_dev_run(cache, tmp_path):
    module = CFMModule(backbone=MLP([1, 8, 8], width=32, depth=2))
    callback = ClassifierMetrics(cache_dir=str(cache))
    trainer = Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DigitsDataModule(batch_size=32))
    metrics = trainer.callback_metrics
    for key in ("val/fd", "val/fd_floor", "val/class_coverage", "val/confidence"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert "val/label_accuracy" not in metrics
    assert float(metrics["val/fd"]) > float(metrics["val/fd_floor"]) > 0  # one training step: far from the data
    assert not any("classifier" in name for name in module.state_dict())  # never part of the model


def test_under_ddp_every_rank_measures_with_rank_zeros_classifier(digits_setup, monkeypatch):
    """Rank 0 trains or loads; the others receive its weights (no training, no cache file needed on their node)."""
    callback, trainer, _ = digits_setup
    sent = []

    class Strategy:
        root_device = torch.device("cpu")

        def __init__(self, rank):
            self.rank = rank

        def broadcast(self, obj, src=0):
            if self.rank == 0:
                sent.append(obj)
            return sent[0]

    rank0 = SimpleNamespace(**{**vars(trainer), "world_size": 2, "is_global_zero": True, "strategy": Strategy(0)})
    rank1 = SimpleNamespace(**{**vars(trainer), "world_size": 2, "is_global_zero": False, "strategy": Strategy(1)})
    first = ClassifierMetrics(cache_dir=callback.cache_dir)
    first.setup(rank0, FakeModule(), "fit")

    def no_training(*args, **kwargs):
        raise AssertionError("rank 1 must not train or read a cache")

    monkeypatch.setattr("lightning_fm.callbacks.classifier_metrics.load_or_train_classifier", no_training)
    second = ClassifierMetrics(cache_dir="/nonexistent")
    second.setup(rank1, FakeModule(), "fit")
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    assert torch.equal(first.classifier.features(x), second.classifier.features(x))
