"""describe_failure on the texts MindSpore really raised (tests/data/mindspore_errors/README.md says how)."""

from pathlib import Path

import numpy as np
import pytest

from babyllama.errors import MESSAGE_LIMIT, describe_failure

CAPTURED = Path(__file__).parent / "data" / "mindspore_errors"


def captured(name: str, kind: type[BaseException] = RuntimeError) -> BaseException:
    return kind((CAPTURED / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name, kind, message, advice", [
    ("train_step_memory.txt", RuntimeError,
     ("Memory not enough: Memory isn't enough and alloc failed, kernel name: 69_Default/model-Transformer/"
      "layers-CellList/0-TransformerBlock/attention-Attention/wq-Linear/MatMul-op14, alloc size: 2097152000B"),
     "lower --batch_size"),
    ("graph_allreduce_lost_peer.txt", RuntimeError, "Kernel error: Launch kernel failed: Default/AllReduce-op0",
     "another worker stopped or cannot be reached"),
    ("pynative_allreduce_lost_peer.txt", RuntimeError, "Launch kernel failed, name:Default/AllReduce-op0",
     "another worker stopped or cannot be reached"),
    ("scheduler_worker_timed_out.txt", RuntimeError,
     ("The total number of timed out node is 1. Timed out node list is: [const vector]{1}, worker 1 is the first "
      "one timed out, please check its log"), "another worker stopped or cannot be reached"),
    ("compile_unsupported_try.txt", RuntimeError, "Unsupported statement 'Try'", "the graph did not compile"),
    ("compile_matmul_shapes.txt", RuntimeError,
     "For 'MatMulExt' op, shape1[-1] must be equal to shape2[-2], but got 3 and 2", "the graph did not compile"),
    ("compile_branch_types.txt", TypeError,
     ("Cannot join the return values of different branches, perhaps you need to make them equal. "
      "Type Join Failed: Abstract type AbstractTensor cannot join with AbstractTuple"), "the graph did not compile"),
    ("kernel_build_response_empty.txt", RuntimeError, "Response is empty", "kernel compiler"),
    ("kernel_build_server_gone.txt", RuntimeError, "Get response before Open() error", "kernel compiler"),
])
def test_a_mindspore_error_is_its_message_then_what_to_do(name, kind, message, advice):
    said = describe_failure(captured(name, kind))
    assert said.partition("; ")[0] == message
    assert advice in said.partition("; ")[2]
    assert "\n" not in said


def test_what_to_do_points_at_the_flags_the_log_or_the_other_workers():
    memory = describe_failure(captured("train_step_memory.txt"))
    assert memory.endswith("; lower --batch_size (raising --grad_accum keeps the tokens per step) or --max_seq_len")
    assert "then resume with --resume" in describe_failure(captured("graph_allreduce_lost_peer.txt"))
    assert describe_failure(captured("compile_unsupported_try.txt")).endswith("see train.log for MindSpore's full report")
    assert describe_failure(captured("kernel_build_response_empty.txt")).endswith("stopped answering, see train.log")


def test_a_long_message_is_cut_and_an_unknown_cause_gets_no_advice():
    said = describe_failure(captured("scheduler_cluster_not_built.txt"))
    assert len(said) == MESSAGE_LIMIT and said.endswith("…")
    assert said.startswith("Failed to initialize distributed job cluster because some processes in the cluster are "
                           "not successfully spawned. You can run command:")
    assert "C++" not in said and ";" not in said


def test_other_errors_keep_their_type_and_first_line():
    assert describe_failure(ValueError("no such file\nsecond line")) == "ValueError: no such file"
    assert describe_failure(KeyboardInterrupt()) == "KeyboardInterrupt"


def test_running_out_of_memory_outside_mindspore_gets_the_same_advice():
    with pytest.raises(MemoryError) as caught:
        np.empty(1 << 62, np.uint8)
    assert describe_failure(caught.value) == (
        "MemoryError: Unable to allocate 4.00 EiB for an array with shape (4611686018427387904,) and data type uint8; "
        "lower --batch_size (raising --grad_accum keeps the tokens per step) or --max_seq_len")
