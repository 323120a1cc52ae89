"""The areas builder against hand-built combinations: same structure, same masks, certified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import combonet
from combonet import Feedback, Hierarchy, SparseModule, SVDModule
from combonet.areas import (
    AreaMap,
    AreaSpec,
    AreasSpec,
    PathwaySpec,
    build_areas,
    combination_at,
    load_areas,
    parse_areas,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "areas"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Single-threaded torch: on 2 busy cores intra-op threads make small linear algebra
    (certificates of 256-unit networks) many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def three_areas(**pathway_kw) -> dict:
    """sensory (4, sparse) <-> association (3, svd) feedback; association -> motor (3, svd)."""
    return {
        "seed": 5,
        "areas": {
            "sensory": {"units": 4, "module": "sparse", "inputs": "0:2",
                        "options": {"density": 0.25, "magnitude": 1.0, "seed": 1}},
            "association": {"units": 3, "module": "svd", "options": {"seed": 2}},
            "motor": {"units": 3, "module": "svd", "output": True, "options": {"seed": 3}},
        },
        "pathways": [
            {"from": "sensory", "to": "association", "kind": "feedback", **pathway_kw},
            {"from": "association", "to": "motor", "kind": "hierarchical"},
        ],
    }


def test_builder_matches_the_hand_built_combination():
    net, amap = build_areas(three_areas())
    s = SparseModule(4, 0.25, 1.0, seed=1)
    a, m = SVDModule(3, seed=2), SVDModule(3, seed=3)
    fb_mask = torch.zeros(7, 7)
    fb_mask[4:7, 0:4] = 1  # association rows, sensory columns (both directions via eq. 3)
    fb = Feedback([s, a], mask=fb_mask)
    h_mask = torch.zeros(10, 10)
    h_mask[7:10, 4:7] = 1  # motor <- association only (no sensory -> motor)
    hand = Hierarchy([fb, m], mask=h_mask)
    assert isinstance(net, Hierarchy) and isinstance(net.systems[0], Feedback)
    assert net.sizes == [7, 3] and net.systems[0].sizes == [4, 3]
    assert torch.equal(net.mask, hand.mask)
    assert torch.equal(net.systems[0].mask, hand.systems[0].mask)
    assert torch.allclose(net.weight(), hand.weight())
    with torch.no_grad():  # same B -> same coupling, metric and rate
        hand.b.copy_(net.b)
        hand.systems[0].b.copy_(net.systems[0].b)
    assert torch.allclose(net.coupling(), hand.coupling())
    assert torch.allclose(net.metric(), hand.metric())
    assert net.rate() == pytest.approx(hand.rate())
    lmat = net.coupling()
    assert not lmat[7:, :4].any() and not lmat[:4, 7:].any()  # no sensory <-> motor
    assert lmat[7:, 4:7].abs().sum() > 0 and lmat[4:7, :4].abs().sum() > 0
    cert = combonet.certify(net, dt=0.1, method="cayley")
    assert cert.certified, cert.summary()
    assert [amap.units(k) for k in ("sensory", "association", "motor")] == [
        slice(0, 4), slice(4, 7), slice(7, 10)]
    fbp, hp = amap.pathway("sensory", "association"), amap.pathway("association", "motor")
    assert combination_at(net, fbp.combination) is net.systems[0]
    assert combination_at(net, hp.combination) is net
    assert (fbp.rows, fbp.cols, hp.rows, hp.cols) == ((4, 7), (0, 4), (7, 10), (4, 7))


def test_groups_are_ordered_by_the_hierarchy_not_by_declaration():
    spec = three_areas()
    spec["areas"] = {k: spec["areas"][k] for k in ("motor", "association", "sensory")}
    net, amap = build_areas(spec)
    assert net.sizes == [7, 3]  # the feedback group first, motor last
    assert amap.units("motor") == slice(7, 10)
    assert amap.units("association") == slice(0, 3) and amap.units("sensory") == slice(3, 7)
    assert combonet.certify(net, dt=0.1, method="cayley").certified


def test_sparse_pathways_and_per_pathway_init_scale():
    dense, _ = build_areas(three_areas())
    net, _ = build_areas(three_areas(density=0.5, init_scale=0.5))
    block = net.systems[0].mask[4:7, 0:4]
    assert 0 < int(block.sum()) < 12
    outside = net.systems[0].mask.clone()
    outside[4:7, 0:4] = 0
    assert not outside.any()
    again, _ = build_areas(three_areas(density=0.5, init_scale=0.5))
    assert torch.equal(again.systems[0].mask, net.systems[0].mask)  # seeded
    on = block.bool()
    ratio = net.systems[0].b[4:7, 0:4][on] / dense.systems[0].b[4:7, 0:4][on]
    assert torch.allclose(ratio, torch.full_like(ratio, 0.5))


def test_nested_areas_and_dotted_endpoints():
    spec = {
        "seed": 0,
        "areas": {
            "sensory": {"areas": {
                "mod1": {"units": 3, "module": "svd", "options": {"seed": 1}},
                "mod2": {"units": 3, "module": "svd", "options": {"seed": 2}}},
                "pathways": [{"from": "mod1", "to": "mod2"}]},
            "pfc": {"units": 4, "module": "product", "options": {"seed": 3}, "output": True},
        },
        "pathways": [{"from": "sensory.mod1", "to": "pfc", "kind": "feedback"}],
    }
    net, amap = build_areas(spec)
    inner = Feedback([SVDModule(3, seed=1), SVDModule(3, seed=2)], mask=torch.tensor(
        [[0, 0], [1, 0]]))
    outer_mask = torch.zeros(10, 10)
    outer_mask[6:10, 0:3] = 1  # pfc <-> mod1 only
    hand = Feedback([inner, combonet.ProductModule(4, seed=3)], mask=outer_mask)
    assert isinstance(net, Feedback) and isinstance(net.systems[0], Feedback)
    assert torch.equal(net.mask, hand.mask)
    assert torch.equal(net.systems[0].mask, hand.systems[0].mask)
    assert torch.allclose(net.weight(), hand.weight())
    assert amap.units("sensory") == slice(0, 6) and amap.units("sensory.mod2") == slice(3, 6)
    assert amap["sensory"].children == ("sensory.mod1", "sensory.mod2")
    inner_p = amap.pathway("sensory.mod1", "sensory.mod2")
    assert combination_at(net, inner_p.combination) is net.systems[0]
    assert combonet.certify(net, dt=0.1, method="cayley").certified
    restored = AreaMap.from_dict(amap.to_dict())
    assert restored.to_dict() == amap.to_dict()


def test_input_and_output_masks():
    _, amap = build_areas(three_areas())
    mask = amap.input_mask(5)
    assert mask.shape == (10, 5)
    assert mask[0:4, 0:2].all() and not mask[0:4, 2:].any() and not mask[4:].any()
    out = amap.output_mask()
    assert out.tolist() == [0.0] * 7 + [1.0] * 3
    with pytest.raises(ValueError, match=r"input channels '0:2' are outside the task's 1"):
        amap.input_mask(1)
    spec = three_areas()
    for area in spec["areas"].values():
        area.pop("inputs", None)
        area.pop("output", None)
    _, plain = build_areas(spec)
    assert plain.input_mask(3).all() and plain.output_mask().all()


def test_file_formats_and_python_objects_build_the_same_network(tmp_path):
    data = three_areas()
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "a.json").write_text(__import__("json").dumps(data))
    toml = '''seed = 5
[areas.sensory]
units = 4
module = "sparse"
inputs = "0:2"
options = { density = 0.25, magnitude = 1.0, seed = 1 }
[areas.association]
units = 3
module = "svd"
options = { seed = 2 }
[areas.motor]
units = 3
module = "svd"
output = true
options = { seed = 3 }
[[pathways]]
from = "sensory"
to = "association"
kind = "feedback"
[[pathways]]
from = "association"
to = "motor"
kind = "hierarchical"
'''
    (tmp_path / "a.toml").write_text(toml)
    obj = AreasSpec(
        areas=[AreaSpec("sensory", 4, "sparse", inputs="0:2",
                        options={"density": 0.25, "magnitude": 1.0, "seed": 1}),
               AreaSpec("association", 3, "svd", options={"seed": 2}),
               AreaSpec("motor", 3, "svd", output=True, options={"seed": 3})],
        pathways=[PathwaySpec("sensory", "association", "feedback"),
                  PathwaySpec("association", "motor", "hierarchical")], seed=5)
    ref, ref_map = build_areas(data)
    for spec in (tmp_path / "a.yaml", tmp_path / "a.json", tmp_path / "a.toml", obj,
                 parse_areas(parse_areas(data).to_dict())):
        net, amap = build_areas(spec)
        sd, rd = net.state_dict(), ref.state_dict()
        assert sd.keys() == rd.keys()
        assert all(torch.equal(sd[k], rd[k]) for k in sd)
        assert amap.to_dict() == ref_map.to_dict()


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["pathways"].append({"from": "motor", "to": "sensory",
                                      "kind": "hierarchical"}),
     "join the same two areas|cycle"),
    (lambda d: d["pathways"][1].update(rank=2), "Hierarchy has no low-rank coupling"),
    (lambda d: d["pathways"][0].update(rank=2, density=0.5), "a low-rank pathway is dense"),
    (lambda d: d["areas"]["motor"].update(module="lstm"), 'Invalid module "lstm"'),
    (lambda d: d["areas"]["motor"]["options"].update(colour=1), "unknown option 'colour'"),
    (lambda d: d["areas"]["motor"]["options"].update(n=3), "set by the area's 'units'"),
    (lambda d: d["areas"]["motor"].pop("units"), "needs 'units'"),
    (lambda d: d["areas"]["motor"].update(size=3), "unknown key"),
    (lambda d: d["pathways"][0].update(to="nowhere"), "unknown area 'nowhere'"),
    (lambda d: d["pathways"][0].update(kind="sideways"), 'Invalid kind "sideways"'),
    (lambda d: d["pathways"][0].update(density=1.5), "density must lie in"),
    (lambda d: d["areas"]["sensory"].update(inputs="a:b"), "invalid input selector"),
    (lambda d: d["pathways"].append({"from": "sensory", "to": "association"}),
     "join the same two areas"),
    (lambda d: d["areas"]["motor"]["options"].update(magnitude=1.0),
     r"area motor \(svd, 3 units\)|unknown option 'magnitude'"),
])
def test_bad_specs_are_refused_in_one_line(change, message):
    spec = three_areas()
    change(spec)
    with pytest.raises(ValueError, match=message) as info:
        build_areas(spec)
    assert "\n" not in str(info.value)


def test_cycles_and_one_way_pathways_inside_feedback_groups_are_refused():
    spec = {"areas": {k: {"units": 3, "module": "svd"} for k in "abc"},
            "pathways": [{"from": "a", "to": "b", "kind": "hierarchical"},
                         {"from": "b", "to": "c", "kind": "hierarchical"},
                         {"from": "c", "to": "a", "kind": "hierarchical"}]}
    with pytest.raises(ValueError, match=r"form a cycle .*make one of them feedback"):
        build_areas(spec)
    spec["pathways"] = [{"from": "a", "to": "b", "kind": "feedback"},
                        {"from": "b", "to": "c", "kind": "feedback"},
                        {"from": "a", "to": "c", "kind": "hierarchical"}]  # a, c in one group
    with pytest.raises(ValueError, match="inside a feedback group has no guarantee"):
        build_areas(spec)
    spec["pathways"][2]["kind"] = "feedback"
    net, _ = build_areas(spec)
    assert isinstance(net, Feedback) and combonet.certify(net, dt=0.1, method="cayley").certified
    assert net.mask.sum() == 3 * 3 * 3  # a-b, b-c and a-c blocks, each once below the diagonal


def test_load_areas_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_areas(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("areas = [\n")
    with pytest.raises(ValueError, match="cannot be parsed"):
        load_areas(bad)
    other = tmp_path / "a.txt"
    other.write_text("x")
    with pytest.raises(ValueError, match=r"must end in \.toml"):
        load_areas(other)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ValueError, match="table/mapping at the top"):
        load_areas(listed)


def test_shipped_examples_build_certified_networks():
    net, amap = build_areas(CONFIGS / "sensory-association-motor.toml")
    assert amap.top_level == ["sensory", "association", "motor"]
    assert combonet.certify(net, dt=0.1, method="cayley").certified
    net, amap = build_areas(CONFIGS / "yang19-multitask.yaml")
    assert net.n == 256 and amap.output_areas == ["motor"]
    assert amap.units("rule") == slice(0, 32)  # the hierarchy's source comes first
    assert amap.input_mask(53)[amap.units("rule")][:, 33:].all()
    assert not amap.input_mask(53)[amap.units("pfc")].any()
    assert not net.coupling()[amap.units("motor"), amap.units("sensory")].any()
    cert = combonet.certify(net, dt=0.1, method="cayley")
    assert cert.certified, cert.summary()
    assert np.isfinite(cert.rate) and cert.rate > 0


def test_per_area_time_constants_build_the_hand_built_combination():
    """Each area keeps its own tau (the core's per-module time constants, eq. 3 in the metric
    ``Mbar = P T^{-1}``); nested areas inherit their parent's."""
    spec = three_areas()
    spec["areas"]["association"]["tau"] = 2.0
    spec["areas"]["motor"]["tau"] = 4.0
    net, amap = build_areas(spec)
    assert [leaf.tau for leaf in net.leaves()] == [1.0, 2.0, 4.0]
    assert amap["motor"].tau == 4.0 and net.tau == 1.0  # the fastest area sets the step bound
    s = SparseModule(4, 0.25, 1.0, seed=1)
    a, m = SVDModule(3, seed=2, tau=2.0), SVDModule(3, seed=3, tau=4.0)
    fb = Feedback([s, a], mask=net.systems[0].mask, seed=0)
    ref = Hierarchy([fb, m], mask=net.mask, seed=0)
    ref.load_state_dict(net.state_dict())
    x, u = torch.randn(3, 10), torch.randn(3, 10)
    assert torch.allclose(net.rhs(x, u), ref.rhs(x, u), atol=1e-6)
    cert = combonet.certify(net, dt=0.5, method="cayley")
    assert cert.certified, cert.summary()
    # eq. 3 with time constants: Mbar L is skew for Mbar = P T^{-1}
    fbn = net.systems[0]
    mbar = fbn.metric().double() / fbn.time_constants().double()[None, :]
    lmat = fbn.own_coupling().double()
    assert torch.allclose(mbar @ lmat + (mbar @ lmat).T, torch.zeros_like(mbar), atol=1e-10)
    nested = {"tau": 3.0, "areas": {"outer": {"tau": 5.0, "areas": {
        "x": {"units": 3, "module": "svd"}, "y": {"units": 3, "module": "svd", "tau": 6.0}},
        "pathways": [{"from": "x", "to": "y"}]}, "z": {"units": 2, "module": "svd"}},
        "pathways": [{"from": "outer", "to": "z"}]}
    net, _ = build_areas(nested)
    assert [leaf.tau for leaf in net.leaves()] == [5.0, 6.0, 3.0]
    assert combonet.certify(net, dt=1.0, method="cayley").certified


def test_a_low_rank_feedback_group_is_one_rank_r_feedback():
    spec = three_areas(rank=2)
    net, amap = build_areas(spec)
    fb = net.systems[0]
    assert isinstance(fb, Feedback) and fb.rank == 2 and fb.low_rank_active()
    assert tuple(fb.u.shape) == (7, 2) and not hasattr(fb, "b")
    lmat = fb.own_coupling().double()
    assert torch.linalg.matrix_rank(lmat, rtol=1e-5) == 4  # L = B - M^-1 B^T M, rank(B) = 2
    assert combonet.certify(net, dt=0.1, method="cayley").certified
    from combonet.analysis import coupling_rank
    assert 1 <= coupling_rank(net, amap, "sensory", "association") <= 4
    # the rank-r coupling as the core builds it by hand: same parameters, same dynamics
    ref = Feedback([SparseModule(4, 0.25, 1.0, seed=1), SVDModule(3, seed=2)], rank=2)
    ref.load_state_dict(fb.state_dict())
    x, u = torch.randn(2, 7), torch.randn(2, 7)
    assert torch.allclose(fb.rhs(x, u), ref.rhs(x, u), atol=1e-6)
    # a pathway init_scale is the group's
    spec = three_areas(rank=2, init_scale=0.01)
    small, _ = build_areas(spec)
    assert small.systems[0].u.abs().max() < fb.u.abs().max()


@pytest.mark.parametrize(("pathways", "message"), [
    ([{"from": "a", "to": "b", "rank": 2}, {"from": "b", "to": "c"}],
     r"every pathway of the group must be low-rank \(not \['b <-> c'\]\)"),
    ([{"from": "a", "to": "b", "rank": 2}, {"from": "b", "to": "c", "rank": 3}],
     r"share one rank, got ranks \[2, 3\]"),
    ([{"from": "a", "to": "b", "rank": 2}, {"from": "b", "to": "c", "rank": 2}],
     r"declare the pathways \['a <-> c'\] with rank=2"),
    ([{"from": "a", "to": "b", "rank": 2, "init_scale": 0.5},
      {"from": "b", "to": "c", "rank": 2}, {"from": "a", "to": "c", "rank": 2}],
     "one init_scale covers the group"),
])
def test_low_rank_groups_the_core_cannot_build_are_refused_saying_why(pathways, message):
    spec = {"areas": {k: {"units": 3, "module": "svd"} for k in "abc"}, "pathways": pathways}
    with pytest.raises(ValueError, match=message) as info:
        build_areas(spec)
    assert "Feedback(rank=r)" in str(info.value) and "\n" not in str(info.value)
    complete = [{"from": a, "to": b, "rank": 2} for a, b in ("ab", "bc", "ac")]
    net, _ = build_areas({**spec, "pathways": complete})
    assert net.rank == 2 and combonet.certify(net, dt=0.1, method="cayley").certified


def test_a_low_rank_pathway_joins_whole_areas():
    spec = {"areas": {"s": {"areas": {"x": {"units": 2, "module": "svd"},
                                      "y": {"units": 2, "module": "svd"}},
                            "pathways": [{"from": "x", "to": "y"}]},
                      "t": {"units": 3, "module": "svd"}},
            "pathways": [{"from": "s.x", "to": "t", "rank": 1}]}
    with pytest.raises(ValueError, match=r"joins whole areas \(s.x <-> t names the sub-area"):
        build_areas(spec)
    spec["pathways"][0]["from"] = "s"
    net, _ = build_areas(spec)
    assert net.rank == 1
