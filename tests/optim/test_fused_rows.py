"""The batched hyper-parameter rows of the fused Adam path equal the per-parameter rows.

The fused CUDA update reads one float64 row per parameter (see ``optim/_fused.py``); Adam
fills the rows of a group in one assignment per step count (``_fused_rows``). This checks,
without a GPU, that it writes exactly what ``_fused_row`` writes, parameter by parameter,
including parameters whose step counts differ."""

import numpy as np
import pytest

import scitensor as st
from scitensor import optim


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
def test_fused_rows_match_fused_row(cls):
    params = [st.ones(3, requires_grad=True) for _ in range(5)]
    opt = cls(params, lr=0.01, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.1)
    group = opt.param_groups[0]
    steps = [0, 0, 3, 0, 7]  # mixed step counts: two distinct rows besides the common one
    for rows_fn in ("batched", "single"):
        for p, t in zip(params, steps):
            opt.state[p] = {"step": t}
        host = np.full((len(params), 12), np.nan)
        if rows_fn == "batched":
            opt._fused_rows(group, list(zip(params, range(len(params)))), host)
            batched, batched_steps = host, [opt.state[p]["step"] for p in params]
        else:
            for i, p in enumerate(params):
                opt._fused_row(group, p, host[i])
            single, single_steps = host, [opt.state[p]["step"] for p in params]
    assert batched_steps == single_steps == [t + 1 for t in steps]
    np.testing.assert_array_equal(batched[:, :9], single[:, :9])
    assert np.isnan(batched[:, 9:]).all()  # columns past the row's values are left alone
