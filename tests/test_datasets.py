"""keras_sequencer.datasets: TensorFlow Datasets access offline, with its missing
packages and unreachable hosts reported in one line."""

import os

import pytest

from keras_sequencer.training import data


class FakeTfdsBuilder:
    """What data.tfds_builder uses of a tfds builder; downloading is an error
    unless ``download_error`` says what it raises."""

    def __init__(self, name, data_dir, download_error=None):
        self.data_path = os.path.join(data_dir, name, "3.0.2")
        self.url_infos = {"https://data.example.org/cifar-10-binary.tar.gz": None}
        self.download_error = download_error

    def download_and_prepare(self):
        raise self.download_error or AssertionError("tried to download offline")


def fake_tfds(monkeypatch, **kwargs):
    import types

    module = types.SimpleNamespace(builder=lambda name, data_dir=None: FakeTfdsBuilder(name, data_dir, **kwargs))
    monkeypatch.setitem(__import__("sys").modules, "tensorflow_datasets", module)


def test_tfds_offline_is_one_line_naming_the_folder_and_data_dir(tmp_path, monkeypatch):
    fake_tfds(monkeypatch)
    monkeypatch.setattr(data, "download_hosts_reachable", lambda urls: False)
    with pytest.raises(ValueError) as error:
        data.load_tfds("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and "--data-dir" in message
    assert str(tmp_path / "cifar10" / "3.0.2") in message and "data.example.org" in message


def test_tfds_missing_dependency_names_the_extra(tmp_path, monkeypatch):
    missing = ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")
    fake_tfds(monkeypatch, download_error=missing)
    monkeypatch.setattr(data, "download_hosts_reachable", lambda urls: True)
    with pytest.raises(ImportError, match=r'importlib_resources .*pip install "keras-sequencer\[train\]"'):
        data.load_tfds("cifar10", data_dir=str(tmp_path))


def test_download_hosts_reachable_fails_fast(tmp_path):
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert data.download_hosts_reachable([f"http://127.0.0.1:{port}/x.tar.gz"])
    finally:
        server.close()
    start = time.time()
    assert not data.download_hosts_reachable([f"http://127.0.0.1:{port}/x.tar.gz"], timeout=2.0)
    assert time.time() - start < 5


def test_real_tfds_builder_offline_is_one_line(tmp_path, monkeypatch):
    """The real TensorFlow Datasets cifar10 builder, with the network check saying offline."""
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("importlib_resources")  # tfds reads its checksum list with it
    monkeypatch.setattr(data, "download_hosts_reachable", lambda urls: False)
    with pytest.raises(ValueError, match=r"not in .*cifar10.*\(no connection to www\.cs\.toronto\.edu\).*--data-dir"):
        data.load_tfds("cifar10", data_dir=str(tmp_path))
