"""The world-model transformer: block-causal mask, KV-cache rollout vs full recomputation, paper-size build."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pwm_model.config import apply_overrides, preset
from pwm_model.world_model.mask import SlotTable, block_causal_mask, sequence_layout, step_mask
from pwm_model.world_model.model import PolicyWorldModel, count_parameters
from pwm_model.world_model.prior import kinematic_prior
from test.model_utils import random_world_model

torch.set_num_threads(1)

SMALL = ["tokenizer.ctx_height_px=16", "tokenizer.ctx_width_px=32", "tokenizer.dyn_height_px=16",
         "tokenizer.dyn_width_px=16", "tokenizer.codebook_bits=5", "data.history_frames=3", "data.future_frames=4",
         "data.num_waypoints=4", "world_model.forecast_frames=3", "world_model.layers=2", "world_model.d_model=32",
         "world_model.heads=4", "world_model.ego_hidden=16", "world_model.head_hidden=16"]


def small_model(*extra: str, seed: int = 0) -> PolicyWorldModel:
    cfg = apply_overrides(preset("tiny"), SMALL + list(extra))
    torch.manual_seed(seed)
    return random_world_model(cfg).eval()


def small_inputs(model: PolicyWorldModel, batch: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c, h, ld = model.codebook_size, model.history_frames, model.dyn_tokens
    ego = torch.cat([torch.rand(batch, 2, generator=g) * 10,
                     torch.nn.functional.one_hot(torch.arange(batch) % 3, 3).float(),
                     torch.rand(batch, 1, generator=g) - 0.5,  # yaw rate rad/s
                     torch.rand(batch, 1, generator=g) * 5], 1)  # command age s
    return {"ctx_tokens": torch.randint(0, c, (batch, model.ctx_tokens), generator=g),
            "dyn_history": torch.randint(0, c, (batch, h, ld), generator=g), "ego": ego}


def test_mask_is_exactly_block_causal() -> None:
    lc, ld, k, h, fed = 3, 2, 2, 2, 1
    layout = sequence_layout(SlotTable(lc, ld, k), h, fed, with_plan=True)
    names = ["ego"] + ["ctx"] * lc + [f"dyn{i}" for i in range(h + fed) for _ in range(ld)] + ["act"] + \
        [f"q{i}" for i in range(k)]
    assert len(layout) == len(names)
    mask = block_causal_mask(layout.blocks)
    # independent definition: every earlier position, plus every position of the same (contiguous) block
    expected = torch.tensor([[j <= i or names[i] == names[j] for j in range(len(names))] for i in range(len(names))])
    assert torch.equal(mask, expected)
    ctx0, dyn0 = 1, 1 + lc
    assert mask[ctx0, ctx0 + 2]  # bidirectional inside the ctx frame
    assert mask[dyn0, dyn0 + 1] and not mask[dyn0, dyn0 + ld]  # inside a dyn frame yes, the next frame no
    assert not mask[0, 1]  # EGO sees only itself
    act = len(names) - k - 1
    assert mask[act].sum() == act + 1 and not mask[act + 1, act + 2]  # ACT and the queries are causal
    # a step appended after a cache sees the whole cache and is block-causal among the new positions
    sm = step_mask(5, torch.tensor([0, 1, 1]))
    assert torch.equal(sm, torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1],
                                         [1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool))


@pytest.mark.parametrize("with_ego", [True, False])
def test_kv_cache_rollout_equals_full_recomputation(with_ego: bool) -> None:
    model = small_model()
    x = small_inputs(model)
    ego = x["ego"] if with_ego else None
    forecast, waypoints, logits = model.rollout(x["ctx_tokens"], x["dyn_history"], ego, return_logits=True)
    b, f, ld = forecast.shape
    assert (b, f, ld) == (3, model.forecast_frames, model.dyn_tokens)
    assert waypoints.shape == (3, model.num_waypoints, 3)
    assert torch.equal(forecast, logits.argmax(-1))
    # one uncached pass over the whole sequence with the block-causal mask gives the same logits and waypoints
    batch = {"ctx_tokens": x["ctx_tokens"], "dyn_tokens": torch.cat([x["dyn_history"], forecast], 1),
             "ego": x["ego"], "ego_valid": torch.full((b,), with_ego),
             "waypoints": torch.zeros(b, model.num_waypoints, 3)}
    with torch.no_grad():
        out = model(batch)
    torch.testing.assert_close(out["logits"], logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["waypoints"], waypoints, atol=1e-5, rtol=1e-5)


def test_export_form_of_the_attention_and_the_cache_forms_compute_the_same_rollout() -> None:
    """Matmul attention with an additive mask (the exported graphs' form) equals SDPA with the boolean mask; the
    prefill's last-rows shortcut equals computing every row; a per-layer cache equals the stacked one."""
    model = small_model()
    x = small_inputs(model)
    ctx, hist, ego = x["ctx_tokens"], x["dyn_history"], x["ego"]
    f_ref, wp_ref, logits_ref = model.rollout(ctx, hist, ego, return_logits=True)
    f_mm, wp_mm, logits_mm = model.rollout(ctx, hist, ego, return_logits=True, matmul_attention=True)
    assert torch.equal(f_mm, f_ref)
    torch.testing.assert_close(logits_mm, logits_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wp_mm, wp_ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        s0 = len(model._layout("prefix"))
        all_rows, kv = model.prefill(ctx, hist, ego, last_rows=s0)
        last, kv_last = model.prefill(ctx, hist, ego)  # Ld rows
        empty, kv_none = model.prefill(ctx, hist, ego, last_rows=0, matmul_attention=True)
        _, kv_layers = model.prefill(ctx, hist, ego, stack_cache=False)
        step, kv_step = model.frame_step(f_ref[:, 0], model.history_frames, kv)
        step_l, kv_step_l = model.frame_step(f_ref[:, 0], torch.tensor([model.history_frames]), kv_layers)
        wp_l = model.plan_step(kv_step_l, ego)
        wp_s = model.plan_step(kv_step, ego)
    assert last.shape == (3, model.dyn_tokens, model.codebook_size) and empty.shape == (3, 0, model.codebook_size)
    torch.testing.assert_close(last, all_rows[:, -model.dyn_tokens:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kv_none, kv, atol=1e-5, rtol=1e-5)
    assert torch.equal(kv_last, kv) and kv.shape == (2, 2, 3, 4, s0, 8)
    assert isinstance(kv_layers, list) and torch.equal(torch.stack([torch.stack(p) for p in kv_layers]), kv)
    assert isinstance(kv_step_l, list) and torch.equal(torch.stack([torch.stack(p) for p in kv_step_l]), kv_step)
    assert torch.equal(step_l, step) and torch.equal(wp_l, wp_s)
    # the training pass: both forms agree on a whole teacher-forced sequence
    tr = model.transformer
    layout = model._layout("seq+plan", model.forecast_frames - 1)
    h = torch.randn(2, len(layout), 32)
    ref, _ = tr(h, layout.mask())
    torch.testing.assert_close(tr(h, layout.mask(), matmul_attention=True)[0], ref, atol=1e-5, rtol=1e-5)


def test_ego_token_changes_the_plan_and_no_ego_uses_the_learned_embedding() -> None:
    model = small_model()
    x = small_inputs(model)
    _, wp_ego = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    _, wp_none = model.rollout(x["ctx_tokens"], x["dyn_history"], None)
    _, wp_invalid = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"], ego_valid=torch.zeros(3, dtype=bool))
    assert not torch.allclose(wp_ego, wp_none)
    torch.testing.assert_close(wp_none, wp_invalid)


def test_cv_prior_adds_driving_on_at_the_current_speed() -> None:
    model = small_model("world_model.prior=cv", "world_model.ego_branch=false")
    torch.nn.init.zeros_(model.waypoint_head[-1].weight)  # the head itself predicts no correction
    torch.nn.init.zeros_(model.waypoint_head[-1].bias)
    x = small_inputs(model)
    _, wp = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    t_s = torch.arange(1, model.num_waypoints + 1) * model.cfg.data.waypoint_dt_s
    torch.testing.assert_close(wp[..., 0], x["ego"][:, :1] * t_s[None])
    assert torch.all(wp[..., 1:] == 0)
    _, wp_invalid = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"], ego_valid=torch.zeros(3, dtype=bool))
    assert torch.all(wp_invalid == 0)  # no ego labels: no speed to extrapolate
    off = small_model("world_model.prior=none", "world_model.ego_branch=false")
    off.load_state_dict(model.state_dict())
    assert torch.all(off.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])[1] == 0)


def test_ctra_prior_is_the_ctra_baseline() -> None:
    from pwm_model.eval.baselines import kinematic

    model = small_model("world_model.prior=ctra", "world_model.ego_branch=false")
    torch.nn.init.zeros_(model.waypoint_head[-1].weight)
    torch.nn.init.zeros_(model.waypoint_head[-1].bias)
    x = small_inputs(model)
    x["ego"][0, 1] = -9.0  # brakes to a stop within the horizon
    _, wp = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    e = x["ego"].numpy()
    want = kinematic("ctra", e[:, 0], e[:, 1], e[:, 5], model.num_waypoints, model.cfg.data.waypoint_dt_s)
    np.testing.assert_allclose(wp.numpy(), want, atol=1e-4)


def test_waypoints_stay_float32_under_bf16_autocast() -> None:
    """A bf16 waypoint 40 m ahead has a 0.25 m resolution: the head's corrections and the loss would round away."""
    model = small_model("world_model.prior=ctra", "world_model.ego_branch=false")
    x = small_inputs(model)
    x["ego"][:, 0] = 12.0  # far enough that bf16 would round the prior to 0.25 m
    torch.nn.init.zeros_(model.waypoint_head[-1].weight)
    torch.nn.init.zeros_(model.waypoint_head[-1].bias)
    with torch.no_grad():
        model.waypoint_head[-1].bias.copy_(torch.tensor([1e-3, 1e-3, 0.0]))  # corrections of a few cm
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, kv = model.prefill(x["ctx_tokens"], x["dyn_history"], x["ego"], last_rows=0, stack_cache=False)
            wp = model.plan_step(kv, x["ego"])
    assert wp.dtype == torch.float32
    prior = kinematic_prior("ctra", x["ego"], model.waypoint_t_s)
    torch.testing.assert_close(wp - prior, (torch.tensor([1e-3, 1e-3, 0.0]) * model.waypoint_scale).expand_as(wp),
                               atol=1e-5, rtol=1e-2)


def test_a_fresh_head_plans_the_prior_and_reads_the_ego_vector_directly() -> None:
    torch.manual_seed(0)
    model = PolicyWorldModel(apply_overrides(preset("tiny"), [*SMALL, "world_model.prior=ctra"])).eval()
    x = small_inputs(model)
    _, fresh = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    torch.testing.assert_close(fresh, kinematic_prior("ctra", x["ego"], model.waypoint_t_s))  # zero last layer
    torch.nn.init.normal_(model.waypoint_head[-1].weight, 0.0, 0.5)  # a head that has learned something
    _, with_ego = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    flipped = x["ego"].clone()
    flipped[:, 2:5] = flipped[:, 2:5].flip(1)  # left <-> right
    _, other = model.rollout(x["ctx_tokens"], x["dyn_history"], flipped)
    assert not torch.allclose(with_ego[0], other[0])  # the command reaches the head
    torch.nn.init.zeros_(model.plan_ego.weight)
    torch.nn.init.zeros_(model.plan_ego.bias)
    _, without = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    assert not torch.allclose(with_ego, without)  # ... through plan_ego, not only through the EGO position


def test_plan_that_does_not_read_the_forecast_keeps_the_video_loss() -> None:
    model = small_model("world_model.plan_reads_forecast=false")
    torch.nn.init.normal_(model.waypoint_head[-1].weight, 0.0, 0.5)  # not the fresh zero head: plans differ
    x = small_inputs(model)
    c = model.codebook_size
    g = torch.Generator().manual_seed(3)
    future = torch.randint(0, c, (3, model.forecast_frames - 1, model.dyn_tokens), generator=g)
    own = model.plan_with_future(x["ctx_tokens"], x["dyn_history"], future, x["ego"])
    none = model.plan_with_future(x["ctx_tokens"], x["dyn_history"], future[:, :0], x["ego"])
    torch.testing.assert_close(own, none)  # the forecast does not reach the plan
    _, rolled = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    torch.testing.assert_close(rolled, none)
    reads = small_model()
    reads.load_state_dict(model.state_dict())
    assert not torch.allclose(reads.plan_with_future(x["ctx_tokens"], x["dyn_history"], future, x["ego"]), none)
    h = model.history_frames
    batch = {"ctx_tokens": x["ctx_tokens"],
             "dyn_tokens": torch.cat([x["dyn_history"], torch.randint(0, c, (3, model.forecast_frames,
                                                                              model.dyn_tokens), generator=g)], 1),
             "ego": x["ego"], "ego_valid": torch.ones(3, dtype=torch.bool),
             "waypoints": torch.zeros(3, model.num_waypoints, 3),
             "waypoints_valid": torch.ones(3, model.num_waypoints, dtype=torch.bool)}
    out = model(batch)
    assert "video_loss" in out and torch.isfinite(out["traj_loss"])
    torch.testing.assert_close(out["waypoints"], none, atol=1e-5, rtol=1e-4)  # training plans as inference does
    assert h == model.history_frames


def test_plan_only_and_sampling_and_token_by_token() -> None:
    model = small_model("world_model.forecast_frames=0")
    x = small_inputs(model)
    forecast, wp = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    assert forecast.shape == (3, 0, model.dyn_tokens) and wp.shape == (3, model.num_waypoints, 3)
    model = small_model()
    runs = [model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"], temperature=1.0,
                          generator=torch.Generator().manual_seed(7))[0] for _ in range(2)]
    assert torch.equal(runs[0], runs[1])  # seeded sampling is reproducible
    greedy = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])[0]
    assert not torch.equal(runs[0], greedy)  # and differs from greedy on random weights
    ar, ar_wp = model.rollout_token_by_token(x["ctx_tokens"], x["dyn_history"], x["ego"])
    assert ar.shape == greedy.shape and int(ar.min()) >= 0 and int(ar.max()) < model.codebook_size
    assert ar_wp.shape == (3, model.num_waypoints, 3)
    # its first token comes from the last position of the prefill, like any token-level decoder
    logits, _ = model.prefill(x["ctx_tokens"], x["dyn_history"], x["ego"])
    assert torch.equal(ar[:, 0, 0], logits[:, -1].argmax(-1))


def test_rollout_rejects_wrong_shapes() -> None:
    model = small_model()
    x = small_inputs(model)
    with pytest.raises(ValueError, match="dyn_history"):
        model.rollout(x["ctx_tokens"], x["dyn_history"][:, 1:], x["ego"])


def test_paper_preset_builds_on_meta_with_about_the_papers_parameter_count() -> None:
    # reference/pwm_method.md: ~1.48B = Phi-1.5 (24 layers, d 2048; 1.42B with a 51,200-row text vocabulary in both
    # the embedding and the LM head) + 8192 extra dyn rows in each + the action head and ego MLP. We have no text
    # vocabulary: 1.48B - 2 x ~50.3k text rows x 2048 (~0.206B) ~= 1.27B expected; we build 1.26B (within 3%).
    cfg = preset("paper")
    with torch.device("meta"):
        model = PolicyWorldModel(cfg)
    n = count_parameters(model)
    assert 1.23e9 < n < 1.31e9, n
    assert model.vocab_size == 2 * 8192 + 3 and model.ctx_tokens == 448 and model.dyn_tokens == 28


def test_planning_from_a_forecast_in_one_pass_equals_a_separate_pass() -> None:
    from pwm_model.world_model.mask import BRANCH_ROLLOUT, BRANCH_TRUE, dual_sequence_layout

    slots = SlotTable(3, 2, 2)
    layout = dual_sequence_layout(slots, 2, 2)
    mask, br = layout.mask(), layout.branches
    assert torch.equal(mask & (br[:, None] != BRANCH_ROLLOUT), block_causal_mask(layout.blocks)
                       & (br[:, None] != BRANCH_ROLLOUT))  # shared and teacher-forced rows: plain block-causal
    assert not mask[br == BRANCH_ROLLOUT][:, br == BRANCH_TRUE].any()  # the rollout branch never sees the truth
    model = small_model()
    x = small_inputs(model)
    b, f = 3, model.forecast_frames
    forecast, wp_rollout = model.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    g = torch.Generator().manual_seed(3)
    true_future = torch.randint(0, model.codebook_size, (b, f, model.dyn_tokens), generator=g)
    batch = {"ctx_tokens": x["ctx_tokens"], "dyn_tokens": torch.cat([x["dyn_history"], true_future], 1),
             "ego": x["ego"], "ego_valid": torch.ones(b, dtype=torch.bool), "waypoints": torch.zeros(b, 4, 3)}
    with torch.no_grad():
        dual = model(batch, plan_future=forecast[:, :-1])
        teacher = model(batch)
    torch.testing.assert_close(dual["waypoints"], wp_rollout, atol=1e-5, rtol=1e-5)  # planned from the forecast
    torch.testing.assert_close(dual["logits"], teacher["logits"], atol=1e-5, rtol=1e-5)  # video loss unchanged
    assert not torch.allclose(teacher["waypoints"], wp_rollout)


def test_command_branches_pick_the_commands_output_and_load_a_single_output_checkpoint(tmp_path) -> None:
    """world_model.command_branches: each command has its own last-layer output; the one-hot picks it, no ego takes
    straight, and a checkpoint without branches loads into a branched model that plans exactly as it did."""
    from pwm_model.world_model.checkpoint import load_world_model, save_world_model

    single = small_model("world_model.prior=ctra")
    for module in (single.waypoint_head[-1], single.ego_branch[-1]):
        torch.nn.init.normal_(module.weight, 0.0, 0.3)
        torch.nn.init.normal_(module.bias, 0.0, 0.3)
    x = small_inputs(model=single)
    _, want = single.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    save_world_model(tmp_path / "single", single.cfg, single)
    cfg = apply_overrides(single.cfg, ["world_model.command_branches=true"])
    branched, _ = load_world_model(tmp_path / "single", cfg)
    assert branched.waypoint_head[-1].out_features == 9
    _, got = branched.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    torch.testing.assert_close(got, want)  # copies of the single output: the same plan

    with torch.no_grad():  # make the left branch (rows 0..2) of both last layers say something of its own
        branched.waypoint_head[-1].bias[:3] += torch.tensor([0.0, 0.05, 0.0])
        k = branched.num_waypoints
        branched.ego_branch[-1].bias.view(k, 3, 3)[:, 0, 1] += 0.01
    _, moved = branched.rollout(x["ctx_tokens"], x["dyn_history"], x["ego"])
    left = x["ego"][:, 2] == 1  # small_inputs: clip 0 left, 1 straight, 2 right
    assert torch.all(moved[left][..., 1] > got[left][..., 1])  # only the left clip's plan moves, to the left
    torch.testing.assert_close(moved[~left], got[~left])
    out = torch.randn(3, branched.num_waypoints, 3, 3)
    no_command = x["ego"].clone()
    no_command[:, 2:5] = 0.0  # an all-zero command (as without ego labels) and no ego at all: the straight branch
    torch.testing.assert_close(branched.select_branch(out, no_command), out[:, :, 1])
    torch.testing.assert_close(branched.select_branch(out, None), out[:, :, 1])
    torch.testing.assert_close(branched.select_branch(out, x["ego"]), out[torch.arange(3), :, torch.arange(3)])


def test_the_command_age_moves_the_plan_unless_the_ablation_hides_it() -> None:
    """``world_model.command_age`` false zeroes the age inside the model: no age changes the plan, and the layers'
    weights on it get no gradient, so the ablation trains exactly as a model without the entry."""
    cfg = apply_overrides(preset("tiny"), ["world_model.layers=1", "world_model.d_model=32", "world_model.heads=2",
                                           "world_model.ego_hidden=16", "world_model.head_hidden=16",
                                           "world_model.ego_branch=true", "world_model.ego_branch_hidden=16"])
    plans = {}
    for reads in (True, False):
        torch.manual_seed(0)
        model = PolicyWorldModel(apply_overrides(cfg, [f"world_model.command_age={str(reads).lower()}"])).eval()
        for layer in (model.plan_ego, model.waypoint_head[-1], model.ego_branch[-1]):
            torch.nn.init.normal_(layer.weight, std=0.3)  # not the zero init: the age could show at once
        x = small_inputs(model)
        aged = dict(x, ego=x["ego"].clone())
        aged["ego"][:, -1] = torch.tensor([0.0, 2.5, 5.0])
        with torch.no_grad():
            plans[reads] = (model.rollout(**x)[1], model.rollout(**aged)[1])
        if not reads:
            h = torch.randn(3, model.num_waypoints, cfg.world_model.d_model)  # query states, as the trunk gives them
            loss = model.waypoints_from_hidden(h, x["ego"]).square().sum()
            (loss + model.ego_mlp(model.ego_features(x["ego"])).square().sum()).backward()  # the EGO position too
            for layer in (model.ego_mlp[0], model.plan_ego, model.ego_branch[0]):
                assert torch.all(layer.weight.grad[:, -1] == 0) and bool(layer.weight.grad[:, :-1].any())
    assert (plans[True][0] - plans[True][1]).abs().max() > 1e-4  # the age is read
    torch.testing.assert_close(plans[False][0], plans[False][1], rtol=0, atol=0)  # the ablation cannot read it
