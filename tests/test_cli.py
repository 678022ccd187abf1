import importlib.metadata
import re

import numpy as np
import pytest

import scitensor as st
from scitensor.cli import main, train_demo


def test_demo_reaches_95_percent(device):
    r = train_demo(device=device, progress=False)
    assert r.device == str(device)
    assert r.test_size == 359
    assert r.test_accuracy >= 0.95, r
    assert r.train_seconds < 30
    assert np.isfinite(r.final_loss) and r.final_loss < 0.1


def test_demo_is_reproducible():
    a = train_demo(epochs=2, progress=False, device="cpu")
    b = train_demo(epochs=2, progress=False, device="cpu")
    assert a.final_loss == b.final_loss and a.test_correct == b.test_correct


def test_demo_command_prints_device_time_and_accuracy(capsys):
    assert main(["demo", "--epochs", "3", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^device: cpu", out, re.M)
    assert re.search(r"trained 3 epochs .* in \d+\.\d+ s on cpu", out)
    assert re.search(r"test accuracy: \d+\.\d+% \(\d+/359\)", out)


def test_demo_progress_bar_goes_to_stderr(capsys):
    main(["demo", "--epochs", "1", "--device", "cpu"])
    captured = capsys.readouterr()
    assert "training" in captured.err and "epoch" in captured.err
    assert "training:" not in captured.out


def test_demo_rejects_bad_arguments(capsys):
    for argv in (["demo", "--epochs", "0"], ["demo", "--lr", "x"], ["nope"], []):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "must be > 0" in capsys.readouterr().err


def test_demo_cuda_unavailable_is_explained():
    ok, why = st.cuda_status()
    if ok:
        pytest.skip("a GPU is usable here")
    with pytest.raises(SystemExit, match="--device cuda is not usable here"):
        main(["demo", "--device", "cuda", "--no-progress"])


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^scitensor\s+{re.escape(st.__version__)}$", out, re.M)
    assert re.search(rf"^numpy\s+{re.escape(np.__version__)}$", out, re.M)
    assert re.search(r"^python\s+3\.\d+", out, re.M)
    assert re.search(r"^devices\s+cpu", out, re.M)
    ok, why = st.cuda_status()
    assert f"{'usable' if ok else 'not usable'}: {why}" in out


def test_console_script_is_declared():
    try:
        importlib.metadata.version("scitensor")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("scitensor is not installed (run from a source tree)")
    eps = importlib.metadata.entry_points(group="console_scripts", name="scitensor")
    assert [ep.value for ep in eps] == ["scitensor.cli:main"]


def test_blas_thread_limit_is_restored():
    from scitensor.cli import _OpenBlasThreads

    with _OpenBlasThreads(1) as limit:
        if limit.set is None:
            pytest.skip("no OpenBLAS loaded in this process")
        inside = limit.get()
    assert inside == 1
    assert limit.get() == limit.previous
