"""Programmatic dependent launch and the persistent decode step of the fused backend.

On the CPU the kernels run through Triton's interpreter (conftest.py), which runs a grid's
programs one after another. That fixes what can be checked there: PDL cannot run at all (the
session falls back to plain launches and says so), and a persistent step can run correctly
only as one block, whose every wait on a completion counter is already satisfied in program
order. That one-block run checks each phase's item arithmetic, the per-layer offsets into
the stacked weights and caches, and the counters' reset for the next step; a two-block run
under the interpreter is a real deadlock (block 0 waits for items of block 1, which has not
started), which is how the timeout guard is checked. What only a GPU shows, and the
benchmark script measures: blocks running concurrently, the acquire/release ordering of the
counters, and PDL's overlap. With a GPU the same tests run the compiled kernels.
"""
from __future__ import annotations

import pytest
import torch

from runner.backends import Unsupported, get_backend
from runner.backends.static_gpt2 import StaticGPT2, StaticSession
from runner.models import build_model
from tests.runner.helpers import tiny_cell, tiny_spec

pytest.importorskip("triton", reason="the fused backend needs triton (requirements-dev.txt)")
pytest.importorskip("numpy", reason="Triton's interpreter needs numpy")

# width 48 with 2 heads: head size 24 and vocabulary 300 are not powers of two
ODD = dict(n_embd=48, n_head=2, vocab_size=300, n_positions=96)
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 6e-2}


@pytest.fixture(scope="module")
def device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sessions(spec, dtype, batch, prompt_len, gen_len, device, **options):
    from runner.backends.fused import FusedSession

    model = build_model(spec, dtype=dtype, device=device, seed=3)
    reference = build_model(spec, dtype=dtype, device=device, seed=3).float()
    max_len = prompt_len + gen_len + 1
    fused = FusedSession(StaticGPT2(model, batch, max_len), batch, prompt_len, **options)
    eager = StaticSession(StaticGPT2(reference, batch, max_len), prompt_len)
    return fused, eager


def _decode_errors(fused, eager, spec, batch, prompt_len, steps, device) -> list[float]:
    ids = torch.randint(0, spec.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(1)).to(device)
    errors = []
    with torch.inference_mode():
        fused.prefill(ids)
        token = eager.prefill(ids).argmax(-1, keepdim=True)
        for _ in range(steps):
            fused.buffers["logits"].fill_(float("nan"))  # every logit must be written by the step
            got = fused.decode(token).float()
            want = eager.decode(token)
            assert torch.isfinite(got).all()
            errors.append(((got - want).norm() / want.norm()).item())
            token = want.argmax(-1, keepdim=True)
    return errors


@pytest.mark.parametrize("dtype,batch", [(torch.float32, 2), (torch.bfloat16, 1)])
def test_persistent_step_matches_the_eager_static_model(device, dtype, batch):
    spec = tiny_spec(n_layer=2, **ODD)
    fused, eager = _sessions(spec, dtype, batch, 7, 3, device, persistent=True)
    assert fused.kernels_per_step == 1 and fused.phases_per_step == 9
    assert max(_decode_errors(fused, eager, spec, batch, 7, 3, device)) <= TOLERANCE[dtype]
    # every step left the counters zeroed for the next launch, and no wait gave up
    assert not fused.persistent.counters.any()
    assert not fused.persistent.timed_out()


def test_persistent_step_reads_the_cache_the_prefill_wrote(device):
    # the prefill writes the per-layer caches, the kernel reads the stacked tensor: one memory
    spec = tiny_spec(n_layer=3, **ODD)
    fused, _ = _sessions(spec, torch.float32, 1, 5, 1, device, persistent=True)
    ids = torch.randint(0, spec.vocab_size, (1, 5), generator=torch.Generator().manual_seed(2)).to(device)
    with torch.inference_mode():
        fused.prefill(ids)
    stacked = fused.persistent.stacked["k_cache"]
    for index, cache in enumerate(fused.model.k_cache):
        assert cache.data_ptr() == stacked[index].data_ptr()
    assert stacked[:, :, :, :5].abs().sum() > 0


def test_pdl_falls_back_to_plain_launches_where_it_cannot_run_and_can_be_turned_off(device):
    from runner.backends.fused_kernels import pdl_unsupported_reason

    spec = tiny_spec(n_layer=2, **ODD)
    capability = torch.cuda.get_device_capability() if device == "cuda" else None
    reason = pdl_unsupported_reason(capability)
    on, eager = _sessions(spec, torch.float32, 1, 6, 2, device)
    assert on.pdl == (reason is None)
    assert max(_decode_errors(on, eager, spec, 1, 6, 2, device)) <= TOLERANCE[torch.float32]
    off, eager = _sessions(spec, torch.float32, 1, 6, 2, device, pdl=False)
    assert off.pdl is False
    assert max(_decode_errors(off, eager, spec, 1, 6, 2, device)) <= TOLERANCE[torch.float32]
    if device == "cpu":
        assert "needs a GPU" in reason


def test_pdl_needs_hopper_or_newer():
    from runner.backends.fused_kernels import pdl_unsupported_reason

    if torch.cuda.is_available():
        pytest.skip("the interpreter's answer is the CPU's; on a GPU the compiled kernels decide")
    assert "needs a GPU" in pdl_unsupported_reason((9, 0))  # the interpreter never overlaps launches


def test_resident_blocks_follow_registers_threads_and_shared_memory():
    from runner.backends.fused_kernels import SMLimits, resident_blocks

    h100 = SMLimits(sm_count=132, threads_per_sm=2048, registers_per_sm=65536, shared_bytes_per_sm=228 * 1024)
    # 8 warps at 128 registers: 4,096 a warp, 16 warps fit an SM's 64K -> 2 blocks an SM
    assert resident_blocks(h100, warps=8, registers_per_thread=128, shared_bytes=2048) == 264
    # 8 warps at 32 registers: threads decide, 2,048 an SM -> 8 blocks an SM
    assert resident_blocks(h100, warps=8, registers_per_thread=32, shared_bytes=2048) == 8 * 132
    # 255 registers a thread: one 8-warp block needs 65,280 of 65,536 -> 1 block an SM
    assert resident_blocks(h100, warps=8, registers_per_thread=255, shared_bytes=0) == 132
    # shared memory decides: 120 KiB a block leaves room for one
    assert resident_blocks(h100, warps=4, registers_per_thread=32, shared_bytes=120 * 1024) == 132
    # registers are allocated per warp in units of 256: 33 a thread costs as much as 40
    assert (resident_blocks(h100, warps=8, registers_per_thread=33, shared_bytes=0)
            == resident_blocks(h100, warps=8, registers_per_thread=40, shared_bytes=0))


def test_persistent_step_refuses_a_grid_larger_than_the_resident_limit():
    from runner.backends.fused_kernels import persistent_grid_reason

    assert persistent_grid_reason(132, resident=132) is None
    reason = persistent_grid_reason(133, resident=132)
    assert "133 blocks" in reason and "only 132 can be resident" in reason
    assert "at least one block" in persistent_grid_reason(0, resident=132)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="residency is read from a compiled kernel on a GPU")
def test_persistent_session_refuses_more_blocks_than_the_gpu_holds():
    from runner.backends.fused import FusedSession

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    model = build_model(tiny_spec(n_layer=1, **ODD), device="cuda")
    with pytest.raises(Unsupported, match="cannot be resident|can be resident"):
        FusedSession(StaticGPT2(model, 1, 8), 1, 4, persistent=True, blocks=64 * sms)


def test_a_persistent_step_that_cannot_finish_fails_instead_of_hanging():
    """Two blocks under the interpreter: block 0 waits for block 1's items, which never start
    while block 0 runs. The spin limit ends the wait, the step sets its error word, and the
    session raises: the cell fails with that reason and the run goes on."""
    from runner.backends.fused import FusedSession
    from runner.backends.fused_kernels import StepTimedOut

    if torch.cuda.is_available():
        pytest.skip("on a GPU two blocks run at once: no deadlock to time out")
    spec = tiny_spec(n_layer=1, **ODD)
    model = build_model(spec, device="cpu", seed=3)
    session = FusedSession(StaticGPT2(model, 1, 8), 1, 4, persistent=True, blocks=2, spin_limit=3)
    ids = torch.randint(0, spec.vocab_size, (1, 4), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        token = session.prefill(ids).argmax(-1, keepdim=True)
        with pytest.raises(StepTimedOut, match="2 blocks gave up waiting .* after 3 reads"):
            session.decode(token)
        # the guard holds: the next generation refuses to start on a broken step
        with pytest.raises(StepTimedOut):
            session.prefill(ids)
    # the blocks still all arrived at the end, and the last one reset the counters
    assert not session.persistent.counters.any()


def test_a_timed_out_cell_is_failed_and_the_next_cell_runs(monkeypatch):
    """Through the runner's protocol: the hanging cell is stored as failed, the run goes on."""
    from runner.backends.fused import Fused
    from runner.protocol import ReferenceCache, measure_in_rounds
    from tests.runner.helpers import fast_settings

    if torch.cuda.is_available():
        pytest.skip("the deadlock needs the interpreter's one-program-at-a-time grid")
    monkeypatch.setattr(Fused, "devices", ("cuda", "cpu"))  # the interpreter serves as the device
    spec = tiny_spec(n_layer=1, **ODD)
    hangs = tiny_cell("fused", spec=spec, prompt_len=3, gen_len=2, persistent=True, blocks=2, spin_limit=2)
    runs = tiny_cell("fused", spec=spec, prompt_len=3, gen_len=2, persistent=True)
    settings = fast_settings(prefill_reps=1, decode_reps=1, e2e_reps=1, warmup_max_iters=2)
    results = dict(measure_in_rounds([hangs, runs], settings, seed=0, references=ReferenceCache(), rounds=1))
    assert results[0].status == "failed" and "gave up waiting" in results[0].error
    assert results[1].status == "ok", results[1].error
    assert results[1].correctness["ok"], results[1].correctness


@pytest.mark.parametrize("options,needle", [
    (dict(pdl="yes"), "option 'pdl' takes a bool, not 'yes'"),
    (dict(persistent=1), "option 'persistent' takes a bool"),
    (dict(persistent=True, blocks=0), "'blocks' must be at least 1, not 0"),
    (dict(blocks=4), "'blocks' applies to the persistent step only"),
    (dict(graph=False), "fused has no option 'graph'; its options are pdl, persistent, blocks, spin_limit"),
])
def test_fused_refuses_options_it_does_not_know(options, needle):
    cell = tiny_cell("fused", **options).model_copy(update={"device": "cuda"})
    reason = get_backend("fused").unsupported_reason(cell)
    assert reason is not None and needle in reason


def test_fused_accepts_its_options():
    backend = get_backend("fused")
    for options in (dict(pdl=False), dict(persistent=True), dict(persistent=True, blocks=66, spin_limit=1000)):
        assert backend.unsupported_reason(tiny_cell("fused", **options).model_copy(update={"device": "cuda"})) is None


def test_the_floor_benchmark_imports_nothing_the_gpu_image_lacks():
    """The benchmark runs where only torch, triton and transformers are installed."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    blocked = "import sys\nfor name in ('pydantic', 'duckdb', 'streamlit', 'typer'):\n    sys.modules[name] = None\n"
    probe = blocked + "import benchmarks.bench_fused_floor as b\nprint(sorted(b.SHAPES))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gpt2-25m" in done.stdout


def test_the_floor_benchmark_shapes_are_the_reference_shapes():
    from benchmarks.bench_fused_floor import SHAPES, hf_config
    from runner.models import get_registered
    from runner.models import hf_config as runner_config

    assert {"gpt2-25m", "SmolLM2-135M"} <= set(SHAPES)
    for name, shape in SHAPES.items():
        spec = get_registered(name)
        assert shape == (spec.family, spec.n_layer, spec.n_embd, spec.n_head, spec.kv_heads, spec.n_inner,
                         spec.vocab, spec.context, spec.tie_embeddings), name
        # the same config, so the benchmark builds the model the runner would
        assert hf_config(name).to_dict() == runner_config(spec).to_dict(), name


COMPILE_FOR_HOPPER = '''
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from runner.backends import fused_kernels as fk

plan = fk.DecodePlan(n_embd=384, n_head=2, n_inner=1536, vocab=50257, max_len=193, batch=1)
CONSTANTS = {"S": plan.S, "CHUNK": plan.CHUNK, "BL": plan.BL, "BLOCK_D": plan.BLOCK_D, "BLOCK_E": plan.BLOCK_E,
             "QKV_COLS": plan.qkv_cols, "OUT_COLS": plan.out_cols, "MLP_COLS": plan.mlp_cols,
             "HEAD_ROWS": plan.head_rows, "MODE": 1, "BN": plan.out_cols}
INTS = ("tok_ptr", "pos_ptr")
COUNTERS = ("counters_ptr", "error_ptr")
FLOAT32 = ("x_a_ptr", "x_b_ptr", "x_in_ptr", "q_ptr", "part_acc_ptr", "part_ml_ptr", "logits_ptr")

def signature(kernel):
    sig = {}
    for name in kernel.arg_names:
        if name in CONSTANTS:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = ("*i64" if name in INTS else "*i32" if name in COUNTERS else "*fp32" if name in FLOAT32
                         else "*bf16")  # weights and caches in bfloat16, the dtype with the most conversions
        else:
            sig[name] = "fp32" if name in ("eps", "scale") else "i32"
    return sig

def ptx(kernel, **options):
    constants = {k: v for k, v in CONSTANTS.items() if k in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, signature(kernel), constants), target=GPUTarget("cuda", 90, 32),
                              options=options)
    return compiled.asm["ptx"]

out = ptx(fk.out_kernel, num_warps=4, launch_pdl=True)
step = ptx(fk.persistent_step_kernel, num_warps=fk.PERSISTENT_WARPS)
print(json.dumps({"pdl_wait": "griddepcontrol.wait" in out, "pdl_launch": "griddepcontrol.launch_dependents" in out,
                  "acquire": "gpu.acquire" in step, "release": "gpu.release" in step,
                  "griddepcontrol_in_step": "griddepcontrol" in step}))
'''


def test_pdl_and_persistent_kernels_compile_for_hopper_without_a_gpu():
    """The interpreter never compiles; Triton's bundled ptxas does, for sm90, with no GPU:
    the PDL kernels wait and release in griddepcontrol, the persistent step uses gpu-scope
    acquire and release on its counters."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    nvidia = pytest.importorskip("triton.backends.nvidia", reason="this Triton has no NVIDIA backend")
    if not (Path(nvidia.__file__).parent / "bin" / "ptxas").exists():
        pytest.skip("this Triton ships no ptxas")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"pdl_wait": True, "pdl_launch": True, "acquire": True, "release": True,
                     "griddepcontrol_in_step": False}


def _simulate_persistent_step(phases, blocks: int, resident: int, seed: int) -> tuple[bool, list[int]]:
    """The counter protocol of the persistent step with `blocks` blocks of which at most
    `resident` run at once, interleaved at random: each block takes items me, me + blocks, ...
    of every phase, waits before its first item of a phase until the phase it depends on is
    complete, then adds its items to its phase's counter. Returns (finished, counters).
    Asserts that no item ever runs before every earlier phase is complete."""
    import random

    rng = random.Random(seed)
    counters = [0] * len(phases)
    done_items = [0] * len(phases)

    def block(me):
        for index, (_, items, waits_on) in enumerate(phases):
            mine = list(range(me, items, blocks))
            for item in mine:
                if item == me and waits_on is not None:
                    while counters[waits_on] < phases[waits_on][1]:
                        yield "waiting"
                # every phase before this one is complete, as a kernel boundary would make it
                assert all(done_items[j] == phases[j][1] for j in range(index)), (index, me)
                done_items[index] += 1
                yield "ran"
            if index < len(phases) - 1:  # the head's slot counts arrivals
                counters[index] += len(mine)
        counters[-1] += 1
        if counters[-1] == blocks:  # the last to arrive resets every counter
            counters[:] = [0] * len(counters)

    waiting = [block(me) for me in range(blocks)]
    running = [waiting.pop(0) for _ in range(min(resident, blocks))]
    stalled = 0
    while running:
        current = rng.choice(running)
        try:
            state = next(current)
        except StopIteration:
            running.remove(current)
            if waiting:
                running.append(waiting.pop(0))
            stalled = 0
            continue
        stalled = stalled + 1 if state == "waiting" else 0
        if stalled > 50 * len(running) * len(phases):  # no resident block can progress
            return False, counters
    return done_items == [items for _, items, _ in phases], counters


@pytest.mark.parametrize("blocks", [1, 3, 8, 40])
def test_counter_protocol_completes_in_every_order_when_all_blocks_are_resident(blocks):
    """What the interpreter cannot show (it runs one program at a time): with concurrent
    blocks the schedule never lets an item run early, never deadlocks, and leaves the
    counters zeroed for the next step, whatever the interleaving."""
    from runner.backends.fused_kernels import DecodePlan, persistent_phases

    plan = DecodePlan(n_embd=80, n_head=2, n_inner=320, vocab=300, max_len=40, batch=2)
    phases = persistent_phases(plan, n_layer=3)
    assert [name for name, _, _ in phases[:5]] == ["qkv", "attention", "out", "mlp", "qkv"]
    assert phases[-1][0] == "head" and len(phases) == plan.phases_per_step(3)
    for seed in range(5):
        finished, counters = _simulate_persistent_step(phases, blocks, resident=blocks, seed=seed)
        assert finished and counters == [0] * len(phases)


def test_counter_protocol_deadlocks_when_a_block_cannot_be_resident():
    """Why the persistent step refuses a grid larger than what can be resident: a block that
    waits for items of a block that has not started waits forever (on a GPU, until the spin
    limit fails the step)."""
    from runner.backends.fused_kernels import DecodePlan, persistent_phases

    plan = DecodePlan(n_embd=80, n_head=2, n_inner=320, vocab=300, max_len=40, batch=1)
    phases = persistent_phases(plan, n_layer=2)
    finished, _ = _simulate_persistent_step(phases, blocks=8, resident=7, seed=0)
    assert not finished


def test_the_floor_benchmark_judges_each_target_on_the_fastest_gated_variant():
    from benchmarks.bench_fused_floor import check_targets

    def row(shape, dtype, limit_ms, **variants):
        return {"shape": shape, "dtype": dtype, "limit_ms": limit_ms, **variants}

    rows = [
        row("gpt2-25m", "float32", 0.033, kernels={"ms": 0.10, "gate_ok": True},
            persistent={"ms": 0.050, "gate_ok": True}, pdl={"ms": 0.040, "gate_ok": False}),
        row("gpt2-25m", "bfloat16", 0.017, kernels={"ms": 0.06, "gate_ok": True}),
        row("gpt2-5m", "float32", 0.007, pdl={"ms": 0.09, "gate_ok": True}),
    ]
    lines = check_targets(rows)
    # the PDL cell failed its gate: the persistent one is the best that counts
    assert "gpt2-25m float32: 1.52x the limit (persistent, 0.0500 ms) target <= 1.6x: met" in lines
    assert "gpt2-5m float32: 0.0900 ms (pdl) target <= 0.08 ms: NOT met" in lines
    assert "gpt2-25m: bfloat16 0.0600 ms vs float32 0.0500 ms: NOT met (bfloat16 no slower)" in lines
