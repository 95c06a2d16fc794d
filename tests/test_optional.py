"""Optional packages (keras_sequencer.optional): one line naming the package and
the extra that installs it, whichever check finds it missing."""

import sys

import pytest

from keras_sequencer import optional


def test_require_installed_names_each_missing_package_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(optional.MissingPackageError) as caught:
        optional.require_installed(("numpy", "tf2onnx", "onnx"), "export to onnx", extra="export")
    assert str(caught.value) == (
        "export to onnx needs tf2onnx, onnx, which are not installed: "
        'pip install "keras-sequencer[export]" (or pip install tf2onnx onnx)'
    )
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ImportError)


def test_require_installed_without_purpose_starts_with_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(optional.MissingPackageError) as caught:
        optional.require_installed(("PIL",))
    assert str(caught.value) == (
        'needs pillow, which is not installed: pip install "keras-sequencer[images]" (or pip install pillow)'
    )


def test_require_installed_imports_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "json.tool", raising=False)
    optional.require_installed(("json.tool",), "a check")
    assert "json.tool" not in sys.modules


def test_require_imports_or_says_why(monkeypatch):
    assert optional.require("json", "a check") is sys.modules["json"]
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(
        optional.MissingPackageError, match=r"^digits needs the sklearn package \(.*\); install it"
    ) as caught:
        optional.require("sklearn", "digits")
    assert str(caught.value).endswith('pip install "keras-sequencer[train]" (or pip install scikit-learn).')
