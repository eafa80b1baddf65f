"""``minidl.utils.data`` and ``minidl.vision`` (issue 32): PyTorch's Dataset, TensorDataset,
Subset and DataLoader, torchvision's MNIST/CIFAR10 datasets and common transforms, on
minidl's loader and augmentation, NumPy in and out."""
import numpy as np
import pytest

import minidl as md
from minidl.data import cifar as cifar_mod, mnist as mnist_mod
from minidl.utils.data import DataLoader, Dataset, Subset, TensorDataset
from minidl.vision import datasets, transforms

from test_data import md5, tiny_cifar_files, tiny_mnist, write_files


def test_tensor_dataset_and_loader_batches_like_pytorch():
    x = md.tensor(np.arange(20, dtype=np.float32).reshape(10, 2))
    y = md.tensor(np.arange(10))
    ds = TensorDataset(x, y)
    assert len(ds) == 10 and ds[3][0].numpy().tolist() == [6.0, 7.0] and ds[3][1].item() == 3
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2)
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape for b in batches] == [(4, 2), (4, 2), (2, 2)]
    xb, yb = batches[0]
    assert yb.dtype == np.int64 and yb.numpy().tolist() == [0, 1, 2, 3]
    assert len(DataLoader(ds, batch_size=4, drop_last=True)) == 2
    with pytest.raises(ValueError, match="first dimension"):
        TensorDataset(x, md.zeros(3))
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(ds, num_workers=-1)


def test_shuffle_follows_manual_seed_and_covers_every_item():
    ds = TensorDataset(md.tensor(np.arange(12)))
    md.manual_seed(5)
    a = [b[0].numpy().tolist() for b in DataLoader(ds, batch_size=5, shuffle=True)]
    md.manual_seed(5)
    b = [b[0].numpy().tolist() for b in DataLoader(ds, batch_size=5, shuffle=True)]
    assert a == b and sorted(sum(a, [])) == list(range(12)) and sum(a, []) != list(range(12))


class Squares(Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"x": np.full(2, i, dtype=np.float32), "y": i * i}, float(i)


def test_item_by_item_collate_and_subset():
    batch = next(iter(DataLoader(Squares(), batch_size=3)))
    fields, values = batch
    assert fields["x"].shape == (3, 2) and fields["y"].numpy().tolist() == [0, 1, 4]
    assert values.dtype == np.float32
    sub = Subset(TensorDataset(md.tensor(np.arange(10) * 10)), [7, 2, 5])
    assert len(sub) == 3 and sub[0][0].item() == 70
    assert next(iter(DataLoader(sub, batch_size=3)))[0].numpy().tolist() == [70, 20, 50]
    with pytest.raises(IndexError, match="out of range"):
        Subset(Squares(), [9])
    custom = DataLoader(Squares(), batch_size=2, collate_fn=lambda items: len(items))
    assert list(custom) == [2, 2, 1]


# --- transforms ----------------------------------------------------------------------------------
def test_to_tensor_and_normalize():
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    t = transforms.ToTensor()(img)
    assert isinstance(t, md.Tensor) and t.shape == (3, 2, 2) and t.dtype == np.float32
    assert t.numpy()[1, 0, 1] == np.float32(4) / np.float32(255)
    n = transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))(t)
    np.testing.assert_allclose(n.numpy()[0], (t.numpy()[0] - 0.5) / 0.25, rtol=1e-6)
    assert transforms.ToTensor()(np.zeros((28, 28), np.uint8)).shape == (1, 28, 28)
    with pytest.raises(TypeError, match="ToTensor first"):
        transforms.Normalize((0.5,), (0.5,))(img)
    try:
        import torch
        import torchvision.transforms as T  # noqa: F401
    except Exception:  # absent, or installed against another torch
        return
    ref = T.Normalize((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))(T.ToTensor()(img))
    np.testing.assert_allclose(n.numpy(), ref.numpy(), rtol=1e-6)


def test_random_crop_and_flip_move_pixels_as_stated():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    md.manual_seed(0)
    seen = {transforms.RandomCrop(4, padding=1)(img).tobytes() for _ in range(60)}
    assert len(seen) == 9  # the nine shifts in [-1, 1]^2
    for out in (np.frombuffer(s, np.uint8).reshape(4, 4) for s in seen):
        nz = out[out > 0]
        assert set(nz.tolist()) <= set(img.ravel().tolist())
    flips = [transforms.RandomHorizontalFlip()(img) for _ in range(40)]
    assert any((f == img[:, ::-1]).all() for f in flips) and any((f == img).all() for f in flips)
    assert (transforms.RandomHorizontalFlip(p=1.0)(md.tensor(img[None] * 1.0)).numpy()[0] == img[:, ::-1]).all()
    with pytest.raises(ValueError, match="own size"):
        transforms.RandomCrop(3, padding=1)(img)


# --- vision datasets ----------------------------------------------------------------------------
@pytest.fixture
def tiny_root(tmp_path, monkeypatch):
    files, arrays = tiny_mnist()
    monkeypatch.setattr(mnist_mod, "MNIST_MD5", {k: md5(v) for k, v in files.items()})
    write_files(tmp_path / "mnist", files)
    cfiles, carrays = tiny_cifar_files()
    write_files(tmp_path / "cifar10" / cifar_mod.FOLDER, cfiles)
    return tmp_path, arrays, carrays


def test_vision_mnist_items_and_loader(tiny_root):
    root, arrays, _ = tiny_root
    pixels, labels = arrays["train"]
    ds = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    assert len(ds) == 7 and ds.targets == labels.tolist()
    img, y = ds[2]
    assert img.shape == (1, 28, 28) and y == int(labels[2])
    np.testing.assert_array_equal(img.numpy()[0], pixels[2] / np.float32(255))
    raw = datasets.MNIST(str(root), train=False)[0][0]
    assert raw.dtype == np.uint8 and raw.shape == (28, 28)
    xb, yb = next(iter(DataLoader(ds, batch_size=7)))  # the batch fast path
    np.testing.assert_array_equal(xb.numpy()[:, 0], pixels / np.float32(255))
    assert yb.numpy().tolist() == labels.tolist()


def test_vision_cifar_fast_path_equals_item_by_item(tiny_root):
    root, _, carrays = tiny_root
    norm = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    with pytest.warns(UserWarning):
        ds = datasets.CIFAR10(str(root), train=True, transform=transforms.Compose([transforms.ToTensor(), norm]))
    fast = next(iter(DataLoader(ds, batch_size=20)))[0].numpy()
    slow = np.stack([ds[i][0].numpy() for i in range(20)])
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-6)
    assert ds[0][0].shape == (3, 32, 32) and ds.data.shape == (20, 32, 32, 3)
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor(), norm])
    with pytest.warns(UserWarning):
        aug = datasets.CIFAR10(str(root), train=True, transform=augment)
    assert next(iter(DataLoader(aug, batch_size=5, shuffle=True)))[0].shape == (5, 3, 32, 32)
