"""The domain registry: entry points, clear errors, and broken plugins reported by name."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from omnidiff.errors import PluginError
from omnidiff.plugins import registry

FAKE_MODULES = ("fake_omni_broken", "fake_omni_hollow", "fake_omni_misnamed",
                "fake_omni_badinit", "fake_omni_good")


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed distribution `fake` with five domain plugins, four of them broken."""
    dist = tmp_path / "fake-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [omnidiff.domains]
        broken = fake_omni_broken:BrokenDomain
        hollow = fake_omni_hollow:HollowDomain
        misnamed = fake_omni_misnamed:MisnamedDomain
        badinit = fake_omni_badinit:BadInitDomain
        good = fake_omni_good:GOOD
        """))
    (tmp_path / "fake_omni_broken.py").write_text(
        "raise ImportError('fake_omni_broken needs the missing package totally_absent')\n")
    (tmp_path / "fake_omni_hollow.py").write_text(textwrap.dedent("""\
        class HollowDomain:
            name = "hollow"
            config_searchpath = None
            def build_data(self, **cfg): ...
        """))
    full = textwrap.dedent("""\
        class {cls}:
            name = {name!r}
            config_searchpath = None
            def __init__(self{extra}): ...
            def build_data(self, **cfg): ...
            def build_network(self, event_shape, num_classes, **cfg): ...
            def save_artifacts(self, samples, out_dir, cond=None, prefix="samples"): ...
            def metrics(self, samples, reference, cond=None, ref_cond=None): return {{}}
        """)
    (tmp_path / "fake_omni_misnamed.py").write_text(
        full.format(cls="MisnamedDomain", name="points", extra=""))
    (tmp_path / "fake_omni_badinit.py").write_text(
        full.format(cls="BadInitDomain", name="badinit", extra=", required_arg"))
    (tmp_path / "fake_omni_good.py").write_text(
        full.format(cls="GoodDomain", name="good", extra="") + "GOOD = GoodDomain()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_cache", {})
    for mod in FAKE_MODULES:
        monkeypatch.delitem(sys.modules, mod, raising=False)
    yield tmp_path
    for mod in FAKE_MODULES:
        sys.modules.pop(mod, None)


def test_builtin_domains_are_registered():
    names = registry.available()
    assert {"points", "image"} <= set(names)
    info = names["points"]
    assert info.value == "omnidiff_domains.points:PointsDomain"
    assert info.package == "omnidiff"


def test_unknown_domain_lists_installed_domains():
    with pytest.raises(registry.UnknownDomainError) as info:
        registry.get_domain("pointz")
    msg = str(info.value)
    assert "\n" not in msg and "'pointz'" in msg
    for name in registry.available():
        assert name in msg
    assert isinstance(info.value, KeyError)
    assert not msg.startswith('"')  # not KeyError's quoted repr


def test_get_domain_caches():
    a = registry.get_domain("points")
    assert registry.get_domain("points") is a


def test_broken_plugins_are_reported_by_name(fake_plugins):
    rows = {r["name"]: r for r in registry.describe()}
    assert {"broken", "hollow", "misnamed", "badinit", "good", "points", "image"} <= set(rows)
    assert rows["points"]["status"] == "ok"
    assert rows["image"]["status"] == "ok"
    assert rows["good"]["status"] == "ok"
    assert rows["good"]["package"] == "fake" and rows["good"]["version"] == "0.0.1"
    for name in ("broken", "hollow", "misnamed", "badinit"):
        status = rows[name]["status"]
        assert status.startswith("broken: "), (name, status)
        assert f"domain plugin {name!r}" in status, (name, status)
        assert "\n" not in status
    assert "ImportError" in rows["broken"]["status"]
    assert "totally_absent" in rows["broken"]["status"]
    for missing in ("build_network", "save_artifacts", "metrics"):
        assert missing in rows["hollow"]["status"]
    assert "calls itself 'points'" in rows["misnamed"]["status"]
    assert "required_arg" in rows["badinit"]["status"]
    # the healthy domains still load after the broken ones were tried
    from omnidiff_domains.points import PointsDomain
    assert isinstance(registry.get_domain("points"), PointsDomain)


def test_broken_plugin_errors_name_the_plugin(fake_plugins):
    with pytest.raises(PluginError, match=r"domain plugin 'broken' \(fake_omni_broken:"):
        registry.get_domain("broken")
    with pytest.raises(TypeError, match=r"domain plugin 'hollow' .* lacks build_network"):
        registry.get_domain("hollow")
    with pytest.raises(registry.DomainContractError, match="must agree"):
        registry.get_domain("misnamed")
    # a TypeError raised inside the plugin itself is still attributed to the plugin
    with pytest.raises(PluginError, match=r"domain plugin 'badinit' .* failed to load"):
        registry.get_domain("badinit")
    assert "broken" not in registry._cache and "good" not in registry._cache
    assert registry.get_domain("good").name == "good"


def test_unknown_domain_lists_plugins_too(fake_plugins):
    with pytest.raises(registry.UnknownDomainError) as info:
        registry.get_domain("nothing")
    for name in ("broken", "good", "points", "image"):
        assert name in str(info.value)


@pytest.fixture
def sub_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plugin `sub` that subclasses the built-in points domain in another package, with its
    own configs: a good domain yaml, a recipe without `# @package _global_`; and a plugin
    `nocfg` whose config folder lacks domain/nocfg.yaml."""
    dist = tmp_path / "fakesub-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakesub\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text(
        "[omnidiff.domains]\nsub = fake_omni_sub:SubDomain\nnocfg = fake_omni_sub:NoCfgDomain\n")
    conf = tmp_path / "subconf"
    (conf / "domain").mkdir(parents=True)
    (conf / "recipe").mkdir()
    (tmp_path / "empty").mkdir()
    points_yaml = Path(__file__).resolve().parents[1] / "domains/points/conf/domain/points.yaml"
    (conf / "domain" / "sub.yaml").write_text(points_yaml.read_text())
    (conf / "recipe" / "sub_bad.yaml").write_text(
        "# forgot the package line\ndefaults:\n  - override /domain: sub\ntrainer:\n"
        "  max_steps: 3\n")
    (tmp_path / "fake_omni_sub.py").write_text(textwrap.dedent(f"""\
        from omnidiff_domains.points import PointsDomain

        class SubDomain(PointsDomain):  # relative specs still mean omnidiff_domains.points
            name = "sub"
            config_searchpath = "file://{conf}"

        class NoCfgDomain(PointsDomain):
            name = "nocfg"
            config_searchpath = "file://{tmp_path / 'empty'}"
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_cache", {})
    monkeypatch.delitem(sys.modules, "fake_omni_sub", raising=False)
    yield tmp_path
    sys.modules.pop("fake_omni_sub", None)


def test_a_subclassed_lazy_domain_keeps_its_parents_parts(sub_plugin):
    dm = registry.get_domain("sub").build_data(kind="density", name="moons", train_size=64,
                                               val_size=16, batch_size=8)
    assert type(dm).__module__ == "omnidiff_domains.points.data"


def test_config_mistakes_of_a_plugin_are_named(sub_plugin, capsys):
    from omnidiff.cli.commands import main
    from omnidiff.errors import ConfigError
    from omnidiff.tasks.config import compose

    with pytest.raises(ConfigError, match=r"'sub_bad' .* '# @package _global_'"):
        compose("sub_bad")
    assert main(["domains"]) == 0
    out = capsys.readouterr().out
    assert "nocfg" in out and "has no domain/nocfg.yaml" in out, out
    assert re.search(r"^sub\s+fakesub 0.0.1\s+\[ok\]", out, re.M), out


def test_unknown_recipe_mentions_broken_plugins(fake_plugins):
    from omnidiff.errors import ConfigError
    from omnidiff.tasks.config import compose

    with pytest.raises(ConfigError, match=r"unknown recipe 'mine'.*broken \(broken: domain "
                                          r"plugin 'broken'"):
        compose("mine")


def test_check_command_runs_the_contract(fake_plugins, capsys):
    from omnidiff.cli.commands import main

    assert main(["check", "points", "data.train_size=256", "model.width=16"]) == 0
    assert "domain 'points' passes the contract" in capsys.readouterr().out
    assert main(["check", "good"]) == 2  # build_data returns None: one line naming it
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("omnidiff: error: domain 'good':"), err
