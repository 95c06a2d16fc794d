"""benchmarks/profile_xla.py: reading XLA's compiled module and the profiler's thunks."""

import gzip
import json

import pytest

from tests.helpers import load_script

profile_xla = load_script("benchmarks/profile_xla.py")

HLO = """HloModule jit_loss_fn, entry_computation_layout={(f32[4,8]{1,0})->f32[]}

%fused_computation.1 (param_0: f32[4,8], param_1: f32[8,8]) -> f32[4,8] {
  %param_0 = f32[4,8]{1,0} parameter(0)
  %param_1 = f32[8,8]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,8]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.2 (param_0.1: f32[4,8]) -> f32[4,8] {
  %param_0.1 = f32[4,8]{1,0} parameter(0)
  ROOT %tanh.1 = f32[4,8]{1,0} tanh(%param_0.1)
}

%region_add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.9 = f32[] add(%a, %b)
}

%fused_computation.3 (param_0.2: f32[4,8]) -> f32[4] {
  %param_0.2 = f32[4,8]{1,0} parameter(0)
  %constant.1 = f32[] constant(0)
  ROOT %reduce.1 = f32[4]{0} reduce(%param_0.2, %constant.1), dimensions={1}, to_apply=%region_add
}

%body (p: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %p = (s32[], /*index=1*/f32[4,8]{1,0}) parameter(0)
  ROOT %t = (s32[], f32[4,8]{1,0}) tuple(%p)
}

ENTRY %main.1 (x: f32[4,8], w: f32[8,8]) -> f32[] {
  %x = f32[4,8]{1,0} parameter(0)
  %w = f32[8,8]{1,0} parameter(1)
  %ynn_fusion.7 = f32[4,8]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_computation.1, metadata={op_name="jit(loss_fn)/jvp(stages_0_blocks_1)/mlp_fc1/dot_general"}
  %tanh_fusion = f32[4,8]{1,0} fusion(%ynn_fusion.7), kind=kLoop, calls=%fused_computation.2, metadata={op_name="jit(loss_fn)/transpose(jvp(stages_0_blocks_1))/rnn_tokens/tanh"}
  %reduce_fusion = f32[4]{0} fusion(%tanh_fusion), kind=kInput, calls=%fused_computation.3, metadata={op_name="jit(loss_fn)/jvp(stages_0_blocks_1)/norm1/reduce_sum"}
  %copy.3 = f32[8,4]{0,1} copy(%tanh_fusion), metadata={op_name="jit(loss_fn)/jvp(stem)/transpose"}
  %while.2 = (s32[], /*index=1*/f32[4,8]{1,0}) while(%t0), condition=%cond, body=%body, metadata={op_name="jit(loss_fn)/jvp(stages_0_blocks_1)/rnn_tokens/while"}
  ROOT %erf = f32[] fusion(%reduce_fusion), kind=kLoop, calls=%fused_computation.2, metadata={op_name="jit(loss_fn)/jvp(stages_0_blocks_1)/erfc/x"}
}
"""  # noqa: E501  (HLO as XLA prints it)


def test_instructions_are_sorted_by_what_they_compute_and_which_pass_ran_them():
    computations, shapes = profile_xla.parse_hlo(HLO)
    kinds = profile_xla.classify(computations)
    assert shapes["ynn_fusion.7"] == "f32[4,8]" and shapes["while.2"] == "(s32[], f32[4,8])"
    assert kinds["ynn_fusion.7"] == ("GEMM", "forward", "mlp_fc1")
    assert kinds["tanh_fusion"] == ("element-wise", "backward", "rnn_tokens")
    assert kinds["reduce_fusion"] == ("reduction", "forward", "norm1")
    assert kinds["copy.3"] == ("copy / layout", "forward", "stem")
    # a shape with an /*index=N*/ comment still parses; a loop's own time holds its body's
    assert kinds["while.2"] == ("loop control", "forward", "rnn_tokens")
    assert kinds["erf"][2] == "gelu"


def _trace(tmp_path, events):
    folder = tmp_path / "plugins" / "profile" / "run"
    folder.mkdir(parents=True)
    with gzip.open(folder / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    return str(tmp_path)


def test_thunk_times_sum_each_thunks_own_events(tmp_path):
    def event(name, ts, dur, hlo=True):
        return {"ph": "X", "name": name, "ts": ts, "dur": dur, "args": {"hlo_op": name} if hlo else {}}

    events = [
        event("ynn_fusion.7", 0.0, 10.0),
        # the runtime saw it complete later: not its work
        {"ph": "X", "name": "end: ynn_fusion.7", "ts": 490.0, "dur": 10.0, "args": {"hlo_op": "ynn_fusion.7"}},
        event("copy.3", 600.0, 200.0),
        event("copy.3", 900.0, 100.0),
        event("ThunkExecutor::Execute", 0.0, 5000.0, hlo=False),  # not a thunk
    ]
    times = profile_xla.thunk_times(_trace(tmp_path, events))
    assert times == {"ynn_fusion.7": pytest.approx(10e-6), "copy.3": pytest.approx(300e-6)}


def test_a_trace_without_thunks_is_a_clear_error(tmp_path):
    folder = _trace(tmp_path, [{"ph": "X", "name": "ThunkExecutor::Execute", "ts": 0, "dur": 1, "args": {}}])
    with pytest.raises(SystemExit, match="no XLA thunk events"):
        profile_xla.thunk_times(folder)


def test_the_report_sums_categories_and_layers_without_the_loops():
    rows = [
        {
            "name": "ynn_fusion.7",
            "category": "GEMM",
            "part": "forward",
            "layer": "mlp_fc1",
            "seconds": 0.5,
            "shape": "f32[4,8]",
        },
        {"name": "tanh_fusion", "category": "element-wise", "part": "backward", "layer": "rnn_tokens", "seconds": 0.25},
        {"name": "dot.2", "category": "GEMM", "part": "backward", "layer": "rnn_tokens", "seconds": 0.25},
        {"name": "while.2", "category": "loop control", "part": "forward", "layer": "rnn_tokens", "seconds": 9.0},
    ]
    lines = profile_xla.table({"wall": 0.9, "rows": rows}, top=2).splitlines()
    assert lines[0] == "wall (median unprofiled call): 0.900 s; thunks summed: 1.000 s"
    assert "| GEMM | 0.500 | 0.250 | 75% |" in lines
    assert "| element-wise | 0.000 | 0.250 | 25% |" in lines
    assert "| rnn_tokens | 0.000 | 0.500 | 0.250 |" in lines
    assert "| ynn_fusion.7 | f32[4,8] | GEMM | forward | mlp_fc1 | 0.5000 |" in lines
    assert not any("while.2" in line for line in lines)
