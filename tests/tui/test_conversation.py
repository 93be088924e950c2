"""The Playground's conversation without a terminal: what each panel sends for the next turn (its
own answers, never the other panel's), the system prompt, answers that failed or were stopped, a
checkpoint replaced, why a server cannot chat, and the conversation as copied and saved."""

from __future__ import annotations

from babyllama_tui.playground.conversation import Conversation, why_no_chat
from babyllama_tui.playground.session import ChatRecord, session_markdown

SETTINGS = {"temperature": 0.0, "seed": 0}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def answer_all(conversation: Conversation, **texts: str) -> None:
    """The newest turn answered in full by each panel named."""
    for slot, text in texts.items():
        answer = conversation.exchanges[-1].answers[slot]
        answer.text, answer.outcome = text, "3 tokens · end of text"


def test_each_panel_sends_the_shared_user_turns_with_its_own_answers():
    conversation = Conversation()
    conversation.system = "你是助手。"
    conversation.ask("第一回讲什么？", ["A", "B"], SETTINGS)
    assert conversation.messages("A") == conversation.messages("B") == [
        {"role": "system", "content": "你是助手。"}, user("第一回讲什么？")]
    answer_all(conversation, A="桃园结义。", B="不知道。")
    conversation.ask("然后呢？", ["A", "B"], SETTINGS)
    assert conversation.messages("A") == [{"role": "system", "content": "你是助手。"}, user("第一回讲什么？"),
                                          assistant("桃园结义。"), user("然后呢？")]
    assert conversation.messages("B")[2] == assistant("不知道。")
    assert conversation.exchanges[-1].answers["A"].settings == SETTINGS


def test_the_newest_system_prompt_goes_first_and_none_when_it_is_empty():
    conversation = Conversation()
    conversation.ask("你好", ["A"], SETTINGS)
    assert conversation.messages("A") == [user("你好")]
    answer_all(conversation, A="你好。")
    conversation.system = "只说一个字。"
    conversation.ask("再说", ["A"], SETTINGS)
    assert conversation.messages("A") == [{"role": "system", "content": "只说一个字。"}, user("你好"),
                                          assistant("你好。"), user("再说")]
    assert conversation.transcript("A") == "user: 你好\n\nassistant: 你好。\n\nsystem: 只说一个字。\n\nuser: 再说\n\nassistant: "


def test_a_failed_answer_is_left_out_and_a_stopped_one_kept_as_far_as_it_got():
    conversation = Conversation()
    conversation.ask("一", ["A", "B"], SETTINGS)
    conversation.exchanges[-1].answers["A"].fail("generation failed: boom")
    stopped = conversation.exchanges[-1].answers["B"]
    stopped.text, stopped.outcome = "半句", "2 tokens · stopped"
    conversation.ask("二", ["A", "B"], SETTINGS)
    assert conversation.messages("A") == [user("二")]
    assert conversation.messages("B") == [user("一"), assistant("半句"), user("二")]
    assert conversation.exchanges[0].answers["A"].notes == [("error", "error: generation failed: boom")]


def test_a_panel_loaded_later_sends_only_the_turns_it_was_asked():
    conversation = Conversation()
    conversation.ask("一", ["A"], SETTINGS)
    answer_all(conversation, A="甲一")
    conversation.ask("二", ["A", "B"], SETTINGS)
    assert conversation.messages("B") == [user("二")]
    assert [exchange.user for exchange, _ in conversation.answered("B")] == ["二"]


def test_a_replaced_checkpoint_s_answers_go_and_turns_nobody_answered_with_them():
    conversation = Conversation()
    conversation.ask("一", ["A"], SETTINGS)
    answer_all(conversation, A="甲一")
    conversation.ask("二", ["A", "B"], SETTINGS)
    answer_all(conversation, A="甲二", B="乙二")
    conversation.forget("A")
    assert [exchange.user for exchange in conversation.exchanges] == ["二"]
    assert conversation.answered("A") == []
    conversation.reset()
    assert conversation.exchanges == []


def test_why_a_server_cannot_chat_is_one_line():
    assert why_no_chat({"event": "ready", "protocol": 2, "chat": True, "chat_template": "babyllama-chat-v1"}) is None
    assert why_no_chat({"event": "ready", "protocol": 2, "chat": False, "chat_template": None}) == \
        "No chat: the checkpoint has no chat template (its tokenizer has no chat tokens)"
    assert why_no_chat({"event": "ready", "protocol": 1}) == \
        "No chat: serve protocol 1 takes no conversations; update babyllama"


def test_a_conversation_is_saved_turn_by_turn_with_each_answer_s_outcome_and_notes():
    conversation = Conversation()
    conversation.system = "你是助手。"
    conversation.ask("一", ["A"], SETTINGS)
    answer_all(conversation, A="甲一")
    conversation.exchanges[-1].answers["A"].note("warning", "note: dropped the 2 oldest turns")
    conversation.ask("二", ["A"], {**SETTINGS, "seed": 1})
    text = session_markdown([], "now", [ChatRecord("A · x", "out/x", conversation.answered("A"))])
    assert text == """# Playground session, now

## Chat: A · x

- checkpoint: `out/x`

System prompt:

```text
你是助手。
```

User:

```text
一
```

Assistant (3 tokens · end of text · `--temperature 0.0 --seed 0`):

```text
甲一
```

> note: dropped the 2 oldest turns

User:

```text
二
```

Assistant (still answering when saved · `--temperature 0.0 --seed 1`):

```text

```
"""
