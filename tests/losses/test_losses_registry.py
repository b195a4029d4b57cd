"""Registry, factory, parameter conversion, compound specs (string and YAML) and their error messages."""

from __future__ import annotations

import pytest
import torch
from _loss_cases import make_batch
from torch import nn

from imbaseg.errors import UserError
from imbaseg.losses import LOSSES, CompoundLoss, build_loss, get_loss, list_losses, parse_loss_spec


def test_registry_is_a_plain_dict_of_modules_named_like_their_keys():
    assert type(LOSSES) is dict
    for name, cls in LOSSES.items():
        assert issubclass(cls, nn.Module) and cls.name == name
        assert isinstance(cls.distance_inputs, tuple)


def test_list_losses_rows():
    rows = list_losses()
    assert [r["name"] for r in rows] == list(LOSSES)
    for row in rows:
        assert set(row) == {"name", "params", "reference", "formula", "summary"}
        assert row["formula"] and row["reference"] and row["summary"]
        module = get_loss(row["name"])
        assert module.hparams == row["params"]  # defaults round-trip into the module


def test_documented_defaults():
    d = {r["name"]: r["params"] for r in list_losses()}
    assert d["boundary-gaussian"] == {"sigma": 2.0, "sync_stats": False}
    assert d["boundary-dou"] == {"sigma": 2.0, "lambda_dou": 1.0, "sync_stats": False}
    assert d["tversky"]["alpha"] == 0.3 and d["tversky"]["beta"] == 0.7
    assert d["focal-tversky"]["gamma"] == 0.75
    assert d["focal"] == {"alpha": 0.25, "gamma": 2.0}
    assert d["unified-focal"]["lambda"] == 0.5 and d["unified-focal"]["delta"] == 0.6
    assert d["cldice"]["iterations"] == 10 and d["hausdorff-dt"] == {"alpha": 2.0}
    assert d["dice"] == {"batch": True, "include_background": False, "smooth": 1e-5}
    assert d["bce"] == {"pos_weight": None}


@pytest.mark.parametrize("params,attr,expected", [
    ({"sigma": "4"}, "sigma", 4.0),
    ({"sigma": 3}, "sigma", 3.0),
    ({"sync_stats": "true"}, "sync_stats", True),
    ({"sync_stats": "No"}, "sync_stats", False),
])
def test_cli_strings_are_converted_to_the_default_type(params, attr, expected):
    loss = get_loss("boundary-gaussian", **params)
    value = getattr(loss, attr)
    assert value == expected and type(value) is type(expected)


def test_int_optional_and_lambda_parameters():
    assert get_loss("cldice", iterations="3").iterations == 3
    assert get_loss("cldice", iterations=4.0).iterations == 4
    assert get_loss("bce", pos_weight="none").pos_weight is None
    assert get_loss("bce", pos_weight="2.5").pos_weight == 2.5
    assert get_loss("focal", alpha="null").alpha is None
    assert get_loss("unified-focal", **{"lambda": "0.3"}).lambda_ == 0.3
    assert get_loss("boundary-dou", **{"lambda-dou": "0.5"}).lambda_dou == 0.5


@pytest.mark.parametrize("name,params,match", [
    ("cldice", {"iterations": "3.5"}, "parameter 'iterations' needs an integer"),
    ("boundary-gaussian", {"sigma": "abc"}, "parameter 'sigma' needs a number, got 'abc'"),
    ("boundary-gaussian", {"sigma": True}, "needs a number"),
    ("dice", {"batch": "maybe"}, r"parameter 'batch' needs a bool \(true/false\)"),
    ("dice", {"smooth": None}, "needs a number, got none"),
    ("bce", {"pos_weight": "heavy"}, "needs a number or none"),
    ("boundary-gaussian", {"sigma": "0"}, "sigma must be > 0"),
    ("unified-focal", {"lambda": 2}, "lambda must be in"),
    ("focal", {"alpha": 1.5}, "alpha must be in"),
])
def test_bad_values_are_user_errors(name, params, match):
    with pytest.raises(UserError, match=match):
        get_loss(name, **params)


@pytest.mark.parametrize("spec,suggested", [("dcie", "dice"), ("boundry-dou", "boundary-dou"),
                                            ("Focal", "focal"), ("hausdorff", "hausdorff-dt")])
def test_unknown_name_lists_choices_and_suggests(spec, suggested):
    with pytest.raises(ValueError) as err:
        get_loss(spec)
    assert isinstance(err.value, UserError)
    assert f"Did you mean '{suggested}'?" in str(err.value)
    assert "boundary-gaussian" in str(err.value) and "lovasz" in str(err.value)  # the choices


def test_unknown_parameter_suggests():
    with pytest.raises(UserError, match=r"unknown parameter 'smoth'.*Did you mean 'smooth'.*Valid param"):
        get_loss("dice", smoth=1)
    with pytest.raises(UserError, match="Did you mean 'sigma'"):
        get_loss("boundary-dou(sigam=3)")


def test_compound_from_string():
    z, y = make_batch("random", b=2, h=12, w=12, seed=1)
    loss = get_loss("boundary-gaussian(sigma=4)+0.5*dou")
    assert isinstance(loss, CompoundLoss)
    assert loss.weights == [1.0, 0.5] and loss.losses[0].sigma == 4.0
    # what the loader precomputes: the Gaussian term at this sigma and the per-image DoU counts
    assert loss.distance_inputs == ("gauss(sigma=4.0)", "boundary_counts")
    value = loss(z, y)
    a = get_loss("boundary-gaussian", sigma=4)(z, y)
    b = get_loss("dou")(z, y)
    assert value.item() == pytest.approx((a + 0.5 * b).item(), rel=1e-6)
    assert set(loss.last_terms) == {"boundary-gaussian", "dou"}
    assert loss.last_terms["dou"].item() == pytest.approx(b.item(), rel=1e-6)
    assert not loss.last_terms["dou"].requires_grad


def test_compound_union_of_distance_inputs_and_repeated_names():
    loss = get_loss("boundary+hausdorff-dt+boundary-dou+dice+dice(smooth=1)")
    assert loss.distance_inputs == ("sdf", "dist_fg", "dist_bg", "gauss(sigma=2.0)", "boundary_counts")
    z, y = make_batch("random", b=2, h=8, w=8)
    loss(z, y)
    assert list(loss.last_terms) == ["boundary", "hausdorff-dt", "boundary-dou", "dice", "dice#2"]


@pytest.mark.parametrize("spec,weights", [("1e-3*dice+bce", [0.001, 1.0]),
                                          ("1e+2*dice + 2.5 * bce", [100.0, 2.5]),
                                          (" dice ( batch = false ) +.5*bce", [1.0, 0.5])])
def test_compound_weights(spec, weights):
    assert get_loss(spec).weights == weights


def test_single_term_specs_give_the_plain_module():
    assert type(get_loss("dice(smooth=1)")).__name__ == "DiceLoss"
    assert get_loss("dice(smooth=1)").smooth == 1.0
    assert isinstance(get_loss("2*dice"), CompoundLoss)
    assert type(get_loss([{"name": "dou"}])).__name__ == "DoULoss"
    assert build_loss is get_loss


@pytest.mark.parametrize("spec,match", [
    ("dcie+bce", "Did you mean 'dice'"),
    ("dice+", "cannot read term ''"),
    ("dice(smooth)", "key=value"),
    ("dice(smooth=1", "unbalanced '\\('"),
    ("dice)+bce", "unbalanced '\\)'"),
    ("abc*dice", "weight 'abc' is not a number"),
    ("dice+bce(pos_weigth=2)", "Did you mean 'pos_weight'"),
    ("", "non-empty"),
])
def test_compound_parse_errors(spec, match):
    with pytest.raises(UserError, match=match):
        get_loss(spec)


def test_params_with_a_compound_spec_are_refused():
    with pytest.raises(UserError, match="in parentheses"):
        get_loss("dice+bce", smooth=1)


def test_yaml_list_form_equals_the_string_form():
    z, y = make_batch("random", b=2, h=12, w=12, seed=2)
    yaml_form = [{"name": "boundary-gaussian", "params": {"sigma": 4}}, {"name": "dou", "weight": 0.5}]
    a = get_loss(yaml_form)
    b = get_loss("boundary-gaussian(sigma=4)+0.5*dou")
    assert a(z, y).item() == b(z, y).item()
    assert a.spec == b.spec
    assert [(t["name"], t["weight"]) for t in a.spec] == [("boundary-gaussian", 1.0), ("dou", 0.5)]
    assert a.spec[0]["params"] == {"sigma": 4.0, "sync_stats": False}
    assert get_loss(a.spec)(z, y).item() == a(z, y).item()  # the stored spec rebuilds the same loss


def test_parse_loss_spec_types_values():
    assert parse_loss_spec("boundary-gaussian(sigma=4)+0.5*dou") == [
        {"name": "boundary-gaussian", "weight": 1.0, "params": {"sigma": 4.0}},
        {"name": "dou", "weight": 0.5, "params": {}},
    ]
    assert parse_loss_spec("dice(batch=false, include_background=true)")[0]["params"] == {
        "batch": False, "include_background": True}


@pytest.mark.parametrize("spec,match", [
    ([{"nmae": "dice"}], "unknown key 'nmae'.*Did you mean 'name'"),
    ([{"weight": 1}], "has no 'name'"),
    ([{"name": "dice", "params": [1]}], "params must be a mapping"),
    ([{"name": "dice", "weight": "heavy"}], "not a number"),
    ([], "empty"),
    (3, "a loss is a name"),
])
def test_yaml_form_errors(spec, match):
    with pytest.raises(UserError, match=match):
        get_loss(spec)


def test_sync_stats_can_be_switched_on_every_batch_statistic_module():
    """The trainer sets ``module.sync_stats = True`` on every submodule that has it; forward reads it then."""
    loss = get_loss("boundary-dou+dynamit-batch+dou+boundary-gaussian")
    flags = [m for m in loss.modules() if hasattr(m, "sync_stats")]
    assert [type(m).__name__ for m in flags] == ["BoundaryDoULoss", "DynamitBatchLoss", "DoULoss",
                                                 "BoundaryGaussianLoss"]
    for m in flags:
        m.sync_stats = True
    z, y = make_batch("random", b=2, h=8, w=8)
    assert torch.isfinite(loss(z, y))  # not distributed: sync is a no-op


def test_repr_shows_the_parameters():
    assert "sigma=4.0" in repr(get_loss("boundary-gaussian", sigma=4))
    assert "1*dice + 0.5*bce" in repr(get_loss("dice+0.5*bce"))


def test_each_name_is_written_once_on_its_class():
    """LOSSES is built from the classes' ``name``; the registry module has no loss name as a string."""
    import ast
    import inspect

    from imbaseg.losses import _registry

    tree = ast.parse(inspect.getsource(_registry))
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & set(LOSSES)


def test_a_duplicate_or_empty_name_cannot_be_registered():
    from imbaseg.losses._registry import _by_name

    twin = type("Twin", (LOSSES["dice"],), {})  # inherits name "dice"
    with pytest.raises(RuntimeError, match="duplicate name 'dice'"):
        _by_name([LOSSES["dice"], twin])
    nameless = type("Nameless", (LOSSES["dice"],), {"name": ""})
    with pytest.raises(RuntimeError, match="empty or duplicate"):
        _by_name([nameless])


def test_unknown_names_still_suggest_the_closest():
    with pytest.raises(UserError, match="Did you mean 'boundary-dou'"):
        get_loss("boundary-do")
