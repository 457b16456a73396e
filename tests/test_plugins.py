"""Options defined outside the package (``miras_search.schema.plugins``): a user's class is usable
at once in points, spaces, models and the conformance suite; ``MIRAS_PLUGINS`` loads it in the
CLI; a class the memory ops cannot run, or one defined wrongly, is refused with a clear message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

import miras_search.schema as schema
from miras_search.cli import app
from miras_search.errors import ConfigError, UnsupportedPoint
from miras_search.memory import MemoryGates, MemoryRule, memory_forward
from miras_search.model.factory import build_model
from miras_search.points import point_from_dict
from miras_search.schema import ModelPoint
from miras_search.schema.algorithm import MemoryAlgorithm
from miras_search.schema.bias import AttentionalBias
from miras_search.schema.feature_map import FeatureMap
from miras_search.schema.gates import Gate, gate_field
from miras_search.schema.memory import MemoryArchitecture
from miras_search.schema.plugins import PLUGINS_ENV, refresh
from miras_search.schema.retention import RetentionGate
from miras_search.space import SearchSpace
from miras_search.testing.conformance import check_forms

TINY = {"block": {"d_model": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 64},
        "train": {"seq_len": 16, "batch_size": 2}}
BASES = (AttentionalBias, RetentionGate, MemoryAlgorithm, MemoryArchitecture, FeatureMap)


@pytest.fixture
def registries() -> Iterator[None]:
    """Whatever a test registers is gone afterwards, and the schemas are as they were."""
    saved = {base: dict(base.registry) for base in BASES}
    yield
    for base, entries in saved.items():
        base.registry.clear()
        base.registry.update(entries)
    refresh()


def _logcosh_bias() -> type[AttentionalBias]:
    class LogCoshBias(AttentionalBias):
        """l = sum log cosh(e): the gradient tanh(e) is autograd's."""

        kind: Literal["logcosh"] = "logcosh"
        summary: ClassVar[str] = "log cosh of the error"

        def loss(self, e, v, delta):
            return e.cosh().log().sum(-1)

    return LogCoshBias


def test_a_bias_defined_in_a_test_is_a_point_a_space_and_a_model(registries):
    with pytest.raises(ValidationError):
        ModelPoint(bias={"kind": "logcosh"})
    bias = _logcosh_bias()
    point = point_from_dict({**TINY, "bias": {"kind": "logcosh"}})
    assert isinstance(point.bias, bias) and "logcosh" in schema.BIAS_KINDS
    assert ModelPoint.model_validate(point.model_dump()) == point  # a stored point loads again

    space = SearchSpace.from_dict({"name": "plug", "base": TINY,
                                   "params": {"bias": {"kind": {"choice": ["l2", "logcosh"]}}}})
    assert {p.bias.kind for p in space.sample(12, seed=0)} == {"l2", "logcosh"}

    model = build_model(point)
    tokens = torch.randint(0, 64, (2, 16))
    logits = model(tokens)
    logits = getattr(logits, "logits", logits)
    assert torch.isfinite(logits).all()
    # its memory rule passes the conformance suite: chunk 1 against the recurrence, chunk 4
    # against the slow reference, in float64, forward and every gradient
    rule = MemoryRule.from_point(ModelPoint(bias={"kind": "logcosh"}, retention={"kind": "l2"}))
    check_forms(rule, length=7, chunk=1, against="recurrent")
    check_forms(rule, length=7, chunk=4, against="reference")

    shown = CliRunner().invoke(app, ["options"], env={"COLUMNS": "200"})
    assert "logcosh" in shown.output and "log cosh of the error" in shown.output


def test_the_registry_restored_refuses_the_kind_again(registries):
    _logcosh_bias()
    ModelPoint(bias={"kind": "logcosh"})
    AttentionalBias.registry.pop("logcosh")
    refresh()
    with pytest.raises(ValidationError, match="logcosh"):
        ModelPoint(bias={"kind": "logcosh"})


def test_a_feature_map_reaches_the_memories_that_hold_one(registries):
    class Elu1(FeatureMap):
        kind: Literal["elu1"] = "elu1"

        def apply(self, x, coefficients=None, tables=None):
            return torch.nn.functional.elu(x) + 1

    point = ModelPoint(memory={"kind": "mlp", "feature_map": {"kind": "elu1"}})
    assert isinstance(point.memory.feature_map, Elu1)


def test_the_same_class_defined_again_replaces_it_and_another_class_is_refused(registries):
    first, again = _logcosh_bias(), _logcosh_bias()  # a notebook cell run twice
    assert first is not again and AttentionalBias.registry["logcosh"] is again
    with pytest.raises(TypeError, match=r"kind 'l2'.*L2Bias already registered"):
        class MyL2(AttentionalBias):
            kind: Literal["l2"] = "l2"

            def loss(self, e, v, delta):
                return e.square().sum(-1)


def test_an_option_without_its_math_is_refused_when_defined(registries):
    with pytest.raises(TypeError, match=r"bias 'nomath' \(.*NoMath\) defines none of loss / phi"):
        class NoMath(AttentionalBias):
            kind: Literal["nomath"] = "nomath"
    with pytest.raises(TypeError, match=r"retention 'noupdate' .* defines none of update"):
        class NoUpdate(RetentionGate):
            kind: Literal["noupdate"] = "noupdate"

            def end_map(self, raw):
                return raw, None
    with pytest.raises(TypeError, match=r"WrongSig\.phi\(self, e\) cannot be called as phi\(self, e, v, delta\)"):
        class WrongSig(AttentionalBias):
            kind: Literal["wrongsig"] = "wrongsig"

            def phi(self, e):
                return e
    assert not {"nomath", "noupdate", "wrongsig"} & (set(AttentionalBias.registry) | set(RetentionGate.registry))


def test_a_memory_the_memory_ops_lack_is_refused_not_run_as_another(registries, tmp_path):
    class Linear2(MemoryArchitecture):
        kind: Literal["linear2"] = "linear2"

    point = ModelPoint.model_validate({**TINY, "memory": {"kind": "linear2"}})
    with pytest.raises(UnsupportedPoint, match="memory 'linear2' is not built"):
        build_model(point)
    (tmp_path / "point.yaml").write_text(point.model_dump_json())
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "point.yaml")], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "memory 'linear2' is not built" in result.output


def test_an_algorithm_without_its_step_is_refused_when_defined(registries):
    with pytest.raises(TypeError, match=r"algorithm 'nostep' \(.*NoStep\) defines none of step"):
        class NoStep(MemoryAlgorithm):
            kind: Literal["nostep"] = "nostep"
    with pytest.raises(TypeError, match=r"BadStep\.step\(self, grad\) cannot be called as step\("):
        class BadStep(MemoryAlgorithm):
            kind: Literal["badstep"] = "badstep"

            def step(self, grad):
                return grad, None
    assert not {"nostep", "badstep"} & set(MemoryAlgorithm.registry)


def _sign_descent() -> type[MemoryAlgorithm]:
    class SignDescent(MemoryAlgorithm):
        """S_t = -eta_t sign(G_t): signSGD as the inner optimiser."""

        kind: Literal["signsgd"] = "signsgd"
        summary: ClassVar[str] = "the sign of the gradient"
        eta: Gate = gate_field(0.05)

        def step(self, grad, eta, theta, buffer):
            return -eta * grad.sign(), None

    return SignDescent


def _nesterov() -> type[MemoryAlgorithm]:
    class Nesterov(MemoryAlgorithm):
        """m_t = theta_t m_{t-1} + G_t, S_t = -eta_t (G_t + theta_t m_t): a buffer, no closed form."""

        kind: Literal["nesterov"] = "nesterov"
        summary: ClassVar[str] = "Nesterov momentum"
        buffered: ClassVar[bool] = True
        eta: Gate = gate_field(0.1)
        theta: Gate = gate_field(0.9)

        def step(self, grad, eta, theta, buffer):
            momentum = theta * buffer + grad
            return -eta * (grad + theta * momentum), momentum

    return Nesterov


def _fixed_step() -> type[MemoryAlgorithm]:
    class FixedStep(MemoryAlgorithm):
        """S_t = -0.1 G_t: no gate at all (in a model its step gets eta None)."""

        kind: Literal["fixed"] = "fixed"
        summary: ClassVar[str] = "a fixed step, no gate"

        def step(self, grad, eta, theta, buffer):
            return -0.1 * grad, None

    return FixedStep


def _by_hand(kind: str, q, k, v, eta, theta, w0) -> torch.Tensor:
    """The recurrence of a matrix memory with l2 bias and no retention, written out for the two
    algorithms above: W_t = W_{t-1} + step(G_t), G_t = (W_{t-1} k_t - v_t) k_t^T, y_t = W_t q_t.
    q, k, v: [T, d]; eta, theta: [T]; w0: [d, d]."""
    w, m, outputs = w0, torch.zeros_like(w0), []
    for t in range(q.shape[0]):
        grad = torch.outer(w @ k[t] - v[t], k[t])
        if kind == "signsgd":
            w = w - eta[t] * grad.sign()
        elif kind == "fixed":
            w = w - 0.1 * grad
        else:
            m = theta[t] * m + grad
            w = w - eta[t] * (grad + theta[t] * m)
        outputs.append(w @ q[t])
    return torch.stack(outputs)


@pytest.mark.parametrize("make", [_sign_descent, _nesterov, _fixed_step])
def test_an_algorithm_is_one_class_a_point_a_space_a_model_and_a_conformant_rule(registries, tmp_path, make):
    algorithm = make()
    kind = algorithm.model_fields["kind"].default
    point = point_from_dict({**TINY, "memory": {"kind": "mlp"}, "algorithm": {"kind": kind}})
    assert isinstance(point.algorithm, algorithm) and kind in schema.ALGORITHM_KINDS
    assert ModelPoint.model_validate(point.model_dump()) == point

    gated = "eta" in algorithm.model_fields  # else a drawn eta would leave the kind unreachable
    eta = {"eta": {"value": {"float": [0.01, 0.2]}}} if gated else {}
    space = SearchSpace.from_dict({"name": "plug", "base": TINY, "params": {
        "algorithm": {"kind": {"choice": ["gd", kind]}, **eta}}})
    assert {p.algorithm.kind for p in space.sample(12, seed=0)} == {"gd", kind}

    model = build_model(point)
    logits = model(torch.randint(0, 64, (2, 16)))
    logits = getattr(logits, "logits", logits)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    # the memory ops run its step: chunk 1 against the recurrence, chunks of 4 against the slow
    # reference, matrix and MLP memories, float64, forward and every gradient
    for memory in ({"kind": "matrix"}, {"kind": "mlp"}):
        for retention in ({"kind": "none"}, {"kind": "l2"}):
            rule = MemoryRule.from_point(ModelPoint(memory=memory, retention=retention, algorithm={"kind": kind}))
            assert rule.materialised_chunks
            check_forms(rule, length=7, chunk=1, against="recurrent")
            check_forms(rule, length=7, chunk=4, against="reference")

    # ... and that recurrence is the algorithm's own, written out by hand
    rule = MemoryRule.from_point(ModelPoint(memory={"kind": "matrix"}, bias={"kind": "l2"}, algorithm={"kind": kind}))
    gen = torch.Generator().manual_seed(0)
    t, d = 9, 4
    q, k, v = (torch.randn(1, t, 1, d, generator=gen, dtype=torch.float64) for _ in range(3))  # [B, T, H, D]
    k = torch.nn.functional.normalize(k, dim=-1)
    eta = torch.rand(1, t, 1, generator=gen, dtype=torch.float64) * 0.3  # [B, T, H]
    theta = torch.rand(1, t, 1, generator=gen, dtype=torch.float64) * 0.9
    gates = MemoryGates(eta=eta if gated else None, theta=theta if rule.optimiser.buffered else None)
    got = memory_forward(rule, q, k, v, gates, [], mode="recurrent")
    expected = _by_hand(kind, q[0, :, 0], k[0, :, 0], v[0, :, 0], eta[0, :, 0], theta[0, :, 0],
                        torch.zeros(d, d, dtype=torch.float64))
    torch.testing.assert_close(got[0, :, 0], expected, rtol=1e-12, atol=1e-12)

    # a space may choose it from the CLI, the options table lists it, and it runs no kernel
    (tmp_path / "point.yaml").write_text(point.model_dump_json())
    runner = CliRunner()
    env = {"COLUMNS": "300"}
    assert runner.invoke(app, ["validate", str(tmp_path / "point.yaml")], env=env).exit_code == 0
    listed = runner.invoke(app, ["options"], env=env).output
    assert kind in listed and algorithm.summary in listed
    kernels = " ".join(runner.invoke(app, ["kernels", str(tmp_path / "point.yaml")], env=env).output.split())
    assert f"algorithm '{kind}'" in kernels and "has no kernel" in kernels


def test_an_algorithm_with_a_nonlinear_step_is_refused_where_the_chunked_form_cannot_run_it(registries):
    kind = _sign_descent().model_fields["kind"].default
    for axes, field in (({"retention": {"kind": "lq"}}, "algorithm.kind"),
                        ({"memory": {"kind": "vector"}}, "algorithm.kind")):
        with pytest.raises(ValidationError, match=re.escape(field)):
            ModelPoint.model_validate({**TINY, **axes, "algorithm": {"kind": kind}})
    # the Omega window takes it (its gradients are summed before the step)
    point = ModelPoint.model_validate({**TINY, "bias": {"kind": "l2", "window": 3}, "algorithm": {"kind": kind}})
    check_forms(MemoryRule.from_point(point), length=7, chunk=1, against="recurrent")


def test_a_preset_less_space_searches_a_field_of_a_default_axis():
    space = SearchSpace.from_dict({"name": "window", "base": TINY, "params": {
        "bias": {"window": {"choice": [1, 4]}},
        "memory": {"feature_map": {"kind": {"choice": ["identity", "polynomial"]}}}}})
    points = space.sample(16, seed=0)
    assert {p.bias.window for p in points} == {1, 4}
    assert {p.memory.feature_map.kind for p in points} == {"identity", "polynomial"}


def test_kernels_names_the_bias_when_the_bias_is_what_no_kernel_takes(tmp_path):
    (tmp_path / "point.yaml").write_text("bias: {kind: lp, smooth: false}\n")
    result = CliRunner().invoke(app, ["kernels", str(tmp_path / "point.yaml")], env={"COLUMNS": "300"})
    assert "no kernel covers bias lp with smooth false" in " ".join(result.output.split())


def _readme_plugin() -> str:
    """The README's example option module (section "Adding an option"): its bias and its
    algorithm, the blocks one after the other."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    body = text.split("## Adding an option\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL))


def _miras(*args: str, cwd, plugins: str | None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRAS_PLUGINS")}
    if plugins is not None:
        env[PLUGINS_ENV] = plugins
    return subprocess.run([sys.executable, "-m", "miras_search", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_miras_plugins_loads_a_users_module_in_the_cli(tmp_path):
    (tmp_path / "my_options.py").write_text(_readme_plugin())
    (tmp_path / "point.yaml").write_text("bias: {kind: cauchy}\n")
    loaded = _miras("validate", "point.yaml", cwd=tmp_path, plugins="my_options")
    assert loaded.returncode == 0, loaded.stderr
    listed = _miras("options", cwd=tmp_path, plugins="my_options")
    assert "cauchy" in listed.stdout and "robust to outliers" in listed.stdout
    assert "signsgd" in listed.stdout
    (tmp_path / "sign.yaml").write_text("memory: {kind: mlp}\nalgorithm: {kind: signsgd}\n")
    assert _miras("validate", "sign.yaml", cwd=tmp_path, plugins="my_options").returncode == 0
    missing = _miras("validate", "point.yaml", cwd=tmp_path, plugins=None)
    assert missing.returncode == 1
    assert PLUGINS_ENV in missing.stdout + missing.stderr
    broken = _miras("validate", "point.yaml", cwd=tmp_path, plugins="no_such_module")
    assert broken.returncode == 1
    message = broken.stdout + broken.stderr
    assert "'no_such_module' named by MIRAS_PLUGINS could not be imported" in " ".join(message.split())
    assert "Traceback" not in message


def test_config_errors_name_the_plugin_variable_for_an_unknown_kind():
    with pytest.raises(ConfigError, match=PLUGINS_ENV):
        point_from_dict({"retention": {"kind": "tanhclip"}})


def _load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: str) -> None:
    from miras_search.schema.plugins import PLUGINS_PATH_ENV, load_plugins

    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.setenv(PLUGINS_ENV, name)
    monkeypatch.setenv(PLUGINS_PATH_ENV, str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    load_plugins()


def test_a_plugin_that_exits_at_import_is_named(tmp_path, monkeypatch):
    """Before: the command exited 3 without a word."""
    from miras_search.errors import MirasError

    with pytest.raises(MirasError, match=re.escape("the option module 'exits_at_import' named by MIRAS_PLUGINS "
                                                   "exited while being imported (sys.exit(3))")):
        _load(tmp_path, monkeypatch, "exits_at_import", "import sys\nsys.exit(3)\n")
    (tmp_path / "point.yaml").write_text("bias: {kind: l2}\n")
    result = _miras("validate", "point.yaml", cwd=tmp_path, plugins="exits_at_import")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "'exits_at_import' named by MIRAS_PLUGINS exited" in " ".join((result.stdout + result.stderr).split())


KINDLESS = '''
from typing import ClassVar, Literal

from miras_search.schema.bias import AttentionalBias


class _Helper(AttentionalBias):
    """private: left alone"""


class SharedBase(AttentionalBias):
    """the base of a registered option: left alone"""


class Derived(SharedBase):
    kind: Literal["derived_kind_test"] = "derived_kind_test"

    def loss(self, e, v, delta):
        return e.square().sum(-1)
'''


def test_a_plugin_option_without_a_kind_is_refused_naming_the_class(tmp_path, monkeypatch, registries):
    """Before: the class was silently ignored (never registered, no point could choose it)."""
    from miras_search.errors import MirasError

    _load(tmp_path, monkeypatch, "kinds_fine", KINDLESS)  # a private helper and a shared base pass
    assert "derived_kind_test" in AttentionalBias.registry
    code = '''
from miras_search.schema.bias import AttentionalBias


class Forgotten(AttentionalBias):
    def loss(self, e, v, delta):
        return e.abs().sum(-1)
'''
    with pytest.raises(MirasError) as caught:
        _load(tmp_path, monkeypatch, "kind_forgotten", code)
    message = str(caught.value)
    assert "'kind_forgotten' named by MIRAS_PLUGINS defines Forgotten, a subclass of AttentionalBias without a kind" in message
    assert 'kind: Literal["forgotten"] = "forgotten"' in message


def test_an_algorithm_that_overrides_a_linear_step_runs_its_own(registries):
    """The linear chunked form computes gd's and momentum's steps itself: a subclass of GD with
    a step of its own runs the materialised form, which calls that step."""
    from miras_search.schema.algorithm import GD

    class HalfGD(GD):
        kind: Literal["halfgd"] = "halfgd"

        def step(self, grad, eta, theta, buffer):
            return -0.5 * eta * grad, None

    assert ModelPoint(algorithm={"kind": "gd"}).algorithm.linear_chunks
    rule = MemoryRule.from_point(ModelPoint(memory={"kind": "matrix"}, bias={"kind": "l2"},
                                            algorithm={"kind": "halfgd"}))
    assert rule.materialised_chunks
    check_forms(rule, length=7, chunk=1, against="recurrent")
    check_forms(rule, length=7, chunk=4, against="reference")
