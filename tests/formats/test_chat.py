"""``portagpt chat`` and core.chat.Chat, with a tiny checkpoint whose tokenizer carries a chat template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch

import portagpt
from portagpt.core.chat import Chat, SamplingOptions, encode_rendered
from portagpt.errors import TokenizerError

# ChatML, with a system default, a loop control and tojson: the features real templates use
TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 400


def write_chat_tokenizer(folder: Path) -> None:
    """A byte-level BPE trained on the bundled corpus, with ChatML's special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = resources.files("portagpt").joinpath("data/the-verdict.txt").read_text()
    tok.train_from_iterator(text.splitlines(), trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": TEMPLATE, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "bos_token": None, "tokenizer_class": "PreTrainedTokenizerFast",
    }))


@pytest.fixture(scope="module")
def chat_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    folder = tmp_path_factory.mktemp("chat")
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True)
    write_hf_checkpoint(cfg, folder)
    write_chat_tokenizer(folder)
    return folder


CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Who painted the picture?"},
    {"role": "assistant", "content": "Jack Gisburn did, rather cheaply."},
    {"role": "user", "content": "Why did he stop painting?"},
]


def test_rendered_prompt_and_ids_equal_transformers_apply_chat_template(chat_ckpt: Path) -> None:
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(chat_ckpt)
    _, ours = portagpt.load(chat_ckpt)
    for convo in (CONVERSATION, CONVERSATION[1:2]):
        want = theirs.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
        assert ours.apply_chat_template(convo, add_generation_prompt=True) == want
        ids = theirs.apply_chat_template(convo, tokenize=True, add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert encode_rendered(ours, want) == list(ids)


def test_cached_multi_turn_ids_and_logits_equal_a_fresh_prefill(chat_ckpt: Path) -> None:
    model, tok = portagpt.load(chat_ckpt)
    chat = Chat(model, tok, system="Answer briefly.", options=SamplingOptions(max_new_tokens=6))
    for text in ("Who painted the picture?", "Why did he stop?", "And then?"):
        gen = chat.send(text)
        next(gen)  # the prompt is prefilled and the first answer token sampled
        fresh_ids = chat.prompt_ids()
        assert chat.cached_ids == fresh_ids  # exactly the whole conversation's tokens
        with torch.no_grad():
            fresh = model(torch.tensor([fresh_ids]))[:, -1]
        torch.testing.assert_close(chat.last_logits, fresh, atol=1e-4, rtol=0)
        for _ in gen:
            pass
    first, *rest = chat.turns
    assert first.prefilled == first.conversation
    assert all(t.prefilled < t.conversation / 2 for t in rest), chat.turns  # only the new turn


def test_end_of_turn_token_comes_from_the_template_and_stops_the_answer(chat_ckpt: Path) -> None:
    model, tok = portagpt.load(chat_ckpt)
    chat = Chat(model, tok, options=SamplingOptions(max_new_tokens=5))
    im_end = encode_rendered(tok, "<|im_end|>")[0]
    assert im_end in chat.stops
    chat.stops = tuple(range(VOCAB))  # every token ends the turn: nothing is generated
    assert chat.say("hello") == "" and chat.turns[-1].stopped and chat.turns[-1].generated == 0


def test_a_checkpoint_without_a_chat_template_is_refused(tmp_path: Path, chat_ckpt: Path) -> None:
    model, tok = portagpt.load(chat_ckpt)
    tok.chat_template = None
    with pytest.raises(TokenizerError, match="has no chat template"):
        Chat(model, tok)


def test_chat_through_a_pipe_streams_multi_turn_answers_and_reports_prefill_counts(chat_ckpt: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "portagpt", "chat", "--checkpoint", str(chat_ckpt), "--system", "Be brief.",
         "--max-new-tokens", "8", "--json"],
        input="Who painted it?\nWhy?\n\nWhat next?\n", capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    turns = out["turns"]
    assert len(turns) == 3 and turns[0]["prefilled"] == turns[0]["conversation"]
    assert turns[2]["prefilled"] < turns[2]["conversation"]
    assert proc.stderr.count("prefilled") == 3 and "Traceback" not in proc.stderr


def test_chat_cli_refuses_a_checkpoint_without_a_template(tmp_path: Path) -> None:
    from loaders.ckpts import write_gpt2

    write_gpt2(tmp_path / "plain")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "portagpt", "chat", str(tmp_path / "plain")],
                          input="hi\n", capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "has no chat template" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr


def test_an_interrupted_answer_keeps_its_text_and_the_next_turn_reuses_the_cache(chat_ckpt: Path) -> None:
    model, tok = portagpt.load(chat_ckpt)
    chat = Chat(model, tok, options=SamplingOptions(max_new_tokens=20))
    real, calls = model.forward, []

    def interrupted(*args, **kwargs):  # Ctrl-C arriving inside the third forward pass
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    model.forward = interrupted
    with pytest.raises(KeyboardInterrupt):
        for _ in chat.send("Who painted it?"):
            pass
    model.forward = real
    assert chat.messages[-1]["role"] == "assistant" and chat.turns[-1].generated == 2
    gen = chat.send("Go on.")
    next(gen)
    assert chat.cached_ids == chat.prompt_ids() and chat.turns[-1].prefilled < chat.turns[-1].conversation
    gen.close()  # what the CLI does on Ctrl-C between tokens
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(tmp_path: Path) -> None:
    import signal
    import time

    from transformers import LlamaConfig

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    folder = tmp_path / "long"
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    write_hf_checkpoint(cfg, folder)
    write_chat_tokenizer(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "portagpt", "chat", str(folder), "--max-new-tokens", "4000", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("Tell me everything.\n")
    proc.stdin.flush()
    proc.stdout.read(1)  # the answer is streaming
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    out, err = proc.communicate("Shorter, please.\n", timeout=300)
    assert proc.returncode == 0, err
    assert "[stopped]" in out and "Traceback" not in err
    turns = json.loads(out.strip().splitlines()[-1])["turns"]
    assert len(turns) == 2 and turns[0]["generated"] < 4000 and turns[1]["prefilled"] < turns[1]["conversation"]


def test_sliding_window_layers_keep_the_cached_conversation_equal_to_a_fresh_prefill(tmp_path: Path) -> None:
    from transformers import Gemma3TextConfig

    from portagpt.smoke_tests.reference import write_hf_checkpoint

    folder = tmp_path / "sliding"
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=256)
    write_hf_checkpoint(cfg, folder)
    write_chat_tokenizer(folder)
    model, tok = portagpt.load(folder)
    assert any(s.window == 8 for s in model.layer_specs)
    chat = Chat(model, tok, options=SamplingOptions(max_new_tokens=5))
    for text in ("Who painted the picture?", "Why did he stop?"):
        gen = chat.send(text)
        next(gen)
        assert chat.cached_ids == chat.prompt_ids()
        with torch.no_grad():
            fresh = model(torch.tensor([chat.cached_ids]))[:, -1]
        torch.testing.assert_close(chat.last_logits, fresh, atol=1e-4, rtol=0)
        for _ in gen:
            pass


def test_chat_with_a_repo_id_from_the_hub_cache(chat_ckpt: Path, tmp_path: Path) -> None:
    import hashlib

    cache = tmp_path / "hf-cache"  # huggingface_hub's layout: blobs, a snapshot of links, refs/main
    repo = cache / "models--org--tiny-chat"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in sorted(chat_ckpt.iterdir()):
        blob = hashlib.sha256(f.read_bytes()).hexdigest()
        (repo / "blobs" / blob).write_bytes(f.read_bytes())
        os.symlink(Path("..") / ".." / "blobs" / blob, repo / "snapshots" / commit / f.name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "portagpt", "chat", "--repo-id", "org/tiny-chat", "--max-new-tokens", "3", "--json"],
        input="hello\n", capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    turns = json.loads(proc.stdout.strip().splitlines()[-1])["turns"]
    assert len(turns) == 1 and turns[0]["prefilled"] == turns[0]["conversation"]


def test_a_conversation_that_outgrows_the_context_is_refused_and_the_chat_goes_on(chat_ckpt: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "portagpt", "chat", str(chat_ckpt), "--max-context", "60",
         "--max-new-tokens", "4", "--json"],
        input="hi\n" + "a very long question " * 10 + "\n/reset\nhi again\n",
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "holds 60" in " ".join(proc.stderr.split()) and "/reset" in proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [m["content"] for m in out["messages"] if m["role"] == "user"] == ["hi again"]


def test_the_python_chat_twin_gives_the_cli_messages_and_prefill_counts(chat_ckpt: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    turns_in = ["Who painted it?", "Why?", "What next?"]
    proc = subprocess.run(
        [sys.executable, "-m", "portagpt", "chat", "--checkpoint", str(chat_ckpt), "--system", "Be brief.",
         "--max-new-tokens", "8", "--json"],
        input="\n".join(turns_in) + "\n", capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout.strip().splitlines()[-1])
    session = portagpt.chat(str(chat_ckpt), system="Be brief.", max_new_tokens=8)
    for text in turns_in:
        session.say(text)
    assert session.messages == cli["messages"]
    assert [vars(t) for t in session.turns] == cli["turns"]


def test_the_python_chat_twin_refuses_bad_options_before_loading(tmp_path: Path) -> None:
    from portagpt.errors import UsageError

    with pytest.raises(UsageError, match="--max-context"):
        portagpt.chat(tmp_path / "nowhere", max_context=1)
