"""Model file version 2: the repeat component and the device's fine-tuning
recipe -- round trips, the lowest version that holds a model, strict
validation of the new arrays and records, and personal repeat weights."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deeprec_edge.model import (ModelFormatError, load_model, make_personal, model_from_params,
                                params_of, save_model, validate_arrays)
from deeprec_edge.recipe import DEFAULT_RECIPE, FinetuneRecipe
from deeprec_edge.repeat import FEATURES, RepeatSpec

from helpers_model import random_model, write_npz

SPEC = RepeatSpec(scale=0.8, w=(2.0, 0.4, -0.2, -0.7, -2.5), memory=300)
RECIPE = FinetuneRecipe(parts=("offset", "bias", "repeat"), l2=3.0, max_events=200)


def _v2(**kw):
    base = random_model(seed=kw.pop("seed", 0))
    return model_from_params(params_of(base), base.item_ids, base.popularity,
                             config={"loss": "xe"}, repeat=kw.get("repeat", SPEC),
                             recipe=kw.get("recipe", RECIPE))


def test_round_trip_and_describe(tmp_path):
    m = _v2()
    assert m.format_version == 2 and m.has_repeat
    p = tmp_path / "m.npz"
    save_model(m, p)
    back = load_model(p)
    assert back.fingerprint() == m.fingerprint()
    assert back.repeat.scale == pytest.approx(SPEC.scale)
    np.testing.assert_allclose(back.repeat.w, SPEC.w, rtol=1e-6)
    assert back.repeat.memory == 300
    assert back.recipe == RECIPE
    d = back.describe()
    assert d["format"].endswith("v2") and d["repeat"]["scale"] == pytest.approx(0.8)
    assert d["finetune_recipe"]["parts"] == ["offset", "bias", "repeat"]
    with np.load(p) as z:
        assert int(z["version"]) == 2


def test_plain_model_is_written_as_version_1(tmp_path):
    m = random_model()
    assert m.format_version == 1 and not m.has_repeat and not m.repeat.active
    assert m.recipe == DEFAULT_RECIPE
    save_model(m, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        assert int(z["version"]) == 1
    # a recipe alone needs version 2
    r = model_from_params(params_of(m), m.item_ids, m.popularity, recipe=RECIPE)
    assert r.format_version == 2 and not r.has_repeat


def _broken(mutate):
    arrays = {k: np.asarray(v) for k, v in _v2().to_arrays().items()}
    cfg = json.loads(str(arrays["config"][()]))
    mutate(arrays, cfg)
    arrays["config"] = np.array(json.dumps(cfg))
    return arrays


@pytest.mark.parametrize("mutate, message", [
    (lambda a, c: a.pop("repeat.w"), "missing array.*repeat.w"),
    (lambda a, c: a.__setitem__("repeat.w", np.zeros(3, np.float32)), "repeat.w.*shape"),
    (lambda a, c: a.__setitem__("repeat.w", np.full(5, np.nan, np.float32)), "NaN|finite"),
    (lambda a, c: a.__setitem__("repeat.scale", np.array(-1.0, np.float32)), "must be > 0"),
    (lambda a, c: a.__setitem__("repeat.scale", np.array(1.0, np.float64)), "float32"),
    (lambda a, c: c["repeat"].__setitem__("features", ["seen"]), "repeat features"),
    (lambda a, c: c["repeat"].__setitem__("memory", 0), "repeat memory"),
    (lambda a, c: c["repeat"].__setitem__("memory", 10 ** 9), "repeat memory"),
    (lambda a, c: c.pop("repeat"), "unexpected array.*repeat"),
    (lambda a, c: c["finetune"].__setitem__("parts", ["everything"]), "unknown part"),
    (lambda a, c: c["finetune"].__setitem__("l2", -1), "l2 must be"),
    (lambda a, c: c["finetune"].__setitem__("surprise", 1), "unknown key"),
    (lambda a, c: a.__setitem__("version", np.array(1)), "version 1 cannot hold"),
])
def test_bad_version_2_files_name_the_problem(tmp_path, mutate, message):
    arrays = _broken(mutate)
    with pytest.raises(ModelFormatError, match=message):
        validate_arrays(arrays, where="m.npz")
    write_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(ModelFormatError, match=message):
        load_model(tmp_path / "bad.npz")


def test_personal_model_carries_its_own_repeat_weights(tmp_path):
    g = _v2()
    p = params_of(g).copy()
    w = np.arange(len(FEATURES), dtype=np.float32)
    pm = make_personal(g, p, clicks_used=10, last_timestamp=1.7e9, seed=0, epochs=0,
                       repeat_w=w)
    assert pm.is_personal and pm.repeat.scale == pytest.approx(g.repeat.scale)
    np.testing.assert_array_equal(pm.repeat_w, w)
    save_model(pm, tmp_path / "p.npz")
    back = load_model(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.repeat_w, w)
    assert back.personal["base_fingerprint"] == g.fingerprint()
    with pytest.raises(ValueError, match="repeat component"):
        make_personal(random_model(), params_of(random_model()), clicks_used=1,
                      last_timestamp=None, seed=0, epochs=0, repeat_w=w)


def test_recipe_validation():
    assert FinetuneRecipe(parts=("repeat", "offset")).parts == ("offset", "repeat")
    for bad in ({"parts": ["offset", "offset"]}, {"max_events": 0}, {"holdout": 0.95},
                {"l2": float("nan")}, {"parts": "offset"}, {"max_iter": True}):
        with pytest.raises(ValueError, match="fine-tuning recipe"):
            FinetuneRecipe.from_dict(bad)
    assert FinetuneRecipe.from_dict(RECIPE.to_dict()) == RECIPE
