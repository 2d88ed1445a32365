"""Writes for the chat: answering a question (retrieve, build the prompt, stream, save) and
marking answers stale when a document they cite changes.

Answering is split into blocking steps so the websocket consumer can run each in a thread and
stream the pieces as they come; `answer_ask` runs the same steps in a row for the REST API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chat.extractive import abstention_text, model_declined
from chat.generation import (
    CheckedAnswer,
    GenerationError,
    LanguageModel,
    citations_attribute,
    citations_check,
    extractive_answer,
    language_model,
    text_pieces,
)
from chat.models import Citation, Conversation, Message
from chat.passages import passages_from_hits
from chat.prompting import Passage, Prompt, Turn, prompt_build, token_counter
from chat.retrieval import retrieval_run
from chat.retrieval.answerability import relevance_threshold
from chat.selectors import Asker, conversation_for, conversation_turns
from config.exceptions import ApplicationError
from ingestion.models import Chunk
from ingestion.search_index import AccessFilter
from ingestion.selectors import access_for_user, sources_visible_to

logger = logging.getLogger(__name__)


class ChatError(ApplicationError):
    """A question that cannot be answered as asked; the message says what to do instead."""


class ConversationNotFound(ChatError):
    status = 404


class SourceNotFound(ChatError):
    status = 404


def conversation_group(conversation_id: int) -> str:
    """The channel-layer group of the sockets showing a conversation."""
    return f"chat.conversation.{conversation_id}"


@dataclass
class AnswerPlan:
    """Everything an answer needs, gathered before the first token."""

    asker: Asker
    question: str
    conversation_id: int | None
    started: float  # time.perf_counter() when the question arrived
    access: AccessFilter
    turns: list[Turn] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    retrieved: list[dict] = field(default_factory=list)
    retrieval_ms: float = 0.0
    model: LanguageModel | None = None
    prompt: Prompt | None = None
    mode: str = Message.Mode.EXTRACTIVE
    notice: str = ""  # why a generative answer fell back to an extractive one
    first_token_ms: float | None = None
    sources: list[int] = field(default_factory=list)  # asked within these sources only (empty: all)
    abstained: bool = False  # no passage answers: the answer says so and cites nothing
    related: list[Passage] = field(default_factory=list)  # the nearest passages, "possibly related"


def question_clean(text: object) -> str:
    if not isinstance(text, str):
        raise ChatError("The question must be text.")
    question = text.strip()
    if not question:
        raise ChatError("The question is empty; type something to ask.")
    if len(question) > settings.CHAT_MAX_QUESTION_CHARS:
        raise ChatError(
            f"The question is {len(question)} characters long; the limit is {settings.CHAT_MAX_QUESTION_CHARS}. "
            "Shorten it."
        )
    return question


def sources_clean(*, asker: Asker, sources: list[int] | None) -> tuple[int, ...] | None:
    """The sources to ask within: None for every source the asker may see; each named one must
    be one they may see now (else 404, the same answer as for one that does not exist)."""
    if not sources:
        return None
    wanted = tuple(dict.fromkeys(int(s) for s in sources))
    visible = set(sources_visible_to(asker.user).filter(pk__in=wanted).values_list("pk", flat=True))
    missing = [s for s in wanted if s not in visible]
    if missing:
        raise SourceNotFound(f"No source {missing[0]} among the sources you may see; pick one of yours.")
    return wanted


def answer_plan(*, asker: Asker, question: str, conversation_id: int | None,
                started: float | None = None, sources: list[int] | None = None) -> AnswerPlan:
    """Check the question and the conversation, retrieve the passages the asker may see (within
    `sources` when given), decide whether they answer the question at all, and build the prompt.
    Blocking (database, embedding model, search index, tokenizer)."""
    started = time.perf_counter() if started is None else started
    question = question_clean(question)
    turns: list[Turn] = []
    if conversation_id is not None:
        conversation = conversation_for(asker, conversation_id)
        if conversation is None:
            raise ConversationNotFound(f"No conversation {conversation_id} among yours; start a new one (null).")
        turns = conversation_turns(conversation, limit=settings.CHAT_HISTORY_TURNS)
    access = access_for_user(asker.user)
    chosen = sources_clean(asker=asker, sources=sources)
    if chosen is not None:
        access = access.narrowed(chosen)
    plan = AnswerPlan(asker=asker, question=question, conversation_id=conversation_id, started=started,
                      access=access, turns=turns, sources=list(chosen or ()))
    found = retrieval_run(question, access=plan.access, k=2 * settings.CHAT_PASSAGES)
    passages = passages_from_hits(found.hits, relevance=found.relevance)[: settings.CHAT_PASSAGES]
    plan.retrieval_ms = (time.perf_counter() - started) * 1000
    threshold = relevance_threshold()
    if not any(p.relevance >= threshold for p in passages):
        # Nothing retrieved answers the question: say so, cite nothing, show the nearest passages.
        plan.abstained = True
        plan.related = passages[: settings.CHAT_RELATED_PASSAGES]
    else:
        plan.passages = passages
        plan.model = language_model()
    if plan.model is not None:
        plan.mode = Message.Mode.GENERATIVE
        try:
            plan.prompt = prompt_build(
                question=question, passages=plan.passages, turns=turns, counter=token_counter(),
                context_tokens=settings.LLM_CONTEXT_TOKENS, reserve_tokens=settings.LLM_MAX_TOKENS,
            )
        except ValueError as error:
            raise ChatError(str(error)) from error
        plan.passages = plan.prompt.passages
    by_chunk = {p.chunk_id: p.n for p in plan.passages}
    plan.retrieved = [
        {"chunk_id": h.chunk_id, "document_id": h.document_id, "score": round(h.score, 6),
         "relevance": round(r, 4), "n": by_chunk.get(h.chunk_id)}
        for h, r in zip(found.hits, found.relevance, strict=True)
    ]
    return plan


def answer_pieces(plan: AnswerPlan) -> Iterator[str]:
    """The answer's text, piece by piece, as it is made. Blocking.

    A language model that fails before its first piece is replaced by the extractive answer (and
    `plan.notice` says so); one that fails midway raises GenerationError, since what was already
    streamed cannot be taken back.
    """
    if plan.abstained:
        for piece in text_pieces(abstention_text(plan.question)):
            if plan.first_token_ms is None:
                plan.first_token_ms = (time.perf_counter() - plan.started) * 1000
            yield piece
        return
    if plan.model is not None and plan.prompt is not None:
        stream = plan.model.stream(plan.prompt.messages, max_tokens=settings.LLM_MAX_TOKENS)
        try:
            first = next(stream)
        except StopIteration:
            first = None
            plan.notice = "The language model returned an empty answer; this one quotes your documents instead."
        except GenerationError as error:
            first = None
            plan.notice = f"{error.message} This answer quotes your documents instead."
            logger.warning("Falling back to an extractive answer: %s", error.message)
        if first is not None:
            plan.first_token_ms = (time.perf_counter() - plan.started) * 1000
            yield first
            yield from stream
            return
        plan.mode = Message.Mode.EXTRACTIVE
    text = extractive_answer(plan.question, plan.passages, sentences=settings.CHAT_EXTRACTIVE_SENTENCES)
    for piece in text_pieces(text):
        if plan.first_token_ms is None:
            plan.first_token_ms = (time.perf_counter() - plan.started) * 1000
        yield piece


@transaction.atomic
def answer_save(plan: AnswerPlan, *, text: str, error: str = "") -> Message:
    """Store the question, its (checked) answer and its citations; a new conversation is made
    for a question that named none. `error` marks an answer the model broke off."""
    if plan.conversation_id is not None:
        conversation = Conversation.objects.select_for_update().filter(pk=plan.conversation_id).first()
        if conversation is None:
            raise ConversationNotFound(f"Conversation {plan.conversation_id} was deleted meanwhile.")
    else:
        conversation = Conversation.objects.create(
            user=plan.asker.user if plan.asker.authenticated else None,
            session_key="" if plan.asker.authenticated else plan.asker.session_key,
            title=" ".join(plan.question.split())[:200],
        )
    checked = citations_check(text, plan.passages)
    if (plan.mode == Message.Mode.GENERATIVE and not error and not plan.abstained
            and model_declined(checked.text) and len(checked.cited) <= 1):
        # The model says the passages do not answer: abstain like the extractive answer does.
        plan.abstained = True
        plan.related = plan.passages[: settings.CHAT_RELATED_PASSAGES]
        checked = CheckedAnswer(text=abstention_text(plan.question), cited=[], invalid=checked.invalid)
    inferred = False
    if plan.mode == Message.Mode.GENERATIVE and not error and not checked.cited and plan.passages \
            and not plan.abstained:
        # The model gave no usable [n]: cite what its sentences demonstrably repeat, never guess.
        attributed = citations_check(citations_attribute(checked.text, plan.passages), plan.passages)
        inferred = bool(attributed.cited)
        if inferred:
            checked = CheckedAnswer(text=attributed.text, cited=attributed.cited, invalid=checked.invalid)
    message = Message.objects.create(
        conversation=conversation,
        question=plan.question,
        answer=checked.text,
        mode=plan.mode,
        status=Message.Status.FAILED if error else Message.Status.COMPLETE,
        error=error or plan.notice,
        retrieved=plan.retrieved,
        prompt=plan.prompt.messages if plan.prompt and plan.mode == Message.Mode.GENERATIVE else [],
        prompt_tokens=plan.prompt.tokens if plan.prompt and plan.mode == Message.Mode.GENERATIVE else None,
        model_name=plan.model.model if plan.model and plan.mode == Message.Mode.GENERATIVE else "extractive",
        invalid_citations=checked.invalid,
        citations_inferred=inferred,
        abstained=plan.abstained,
        related=[p.as_citation() for p in plan.related],
        sources=plan.sources,
        retrieval_ms=round(plan.retrieval_ms, 2),
        first_token_ms=round(plan.first_token_ms, 2) if plan.first_token_ms is not None else None,
        total_ms=round((time.perf_counter() - plan.started) * 1000, 2),
    )
    by_number = {p.n: p for p in plan.passages}
    Citation.objects.bulk_create([
        Citation(message=message, n=n, chunk_id=by_number[n].chunk_id, document_id=by_number[n].document_id,
                 title=by_number[n].title[:500], uri=by_number[n].uri[:2048], text=by_number[n].text,
                 page=by_number[n].page, url=by_number[n].url[:2048])
        for n in checked.cited
    ])
    conversation.save(update_fields=["updated_at"])
    return message


def answer_ask(*, asker: Asker, question: str, conversation_id: int | None = None,
               sources: list[int] | None = None) -> Message:
    """Answer in one call (the REST API): the same steps as the socket, without streaming."""
    plan = answer_plan(asker=asker, question=question, conversation_id=conversation_id, sources=sources)
    pieces: list[str] = []
    try:
        for piece in answer_pieces(plan):
            pieces.append(piece)
    except GenerationError as error:
        answer_save(plan, text="".join(pieces), error=error.message)
        raise
    return answer_save(plan, text="".join(pieces))


def answers_mark_stale(*, document_id: int) -> list[Message]:
    """Mark the answers whose cited passages of `document_id` no longer read as they did (the
    document changed or is gone), and tell the sockets showing them, after commit."""
    with transaction.atomic():
        current = dict(Chunk.objects.filter(document_id=document_id).values_list("id", "text"))
        cited = Citation.objects.filter(document_id=document_id, message__stale=False)
        message_ids = {c.message_id for c in cited.only("message_id", "chunk_id", "text")
                       if current.get(c.chunk_id) != c.text}
        if not message_ids:
            return []
        Message.objects.filter(pk__in=message_ids, stale=False).update(stale=True)
        messages = list(Message.objects.filter(pk__in=message_ids).only("id", "conversation_id"))
        transaction.on_commit(lambda: _stale_broadcast(messages, document_id))
    return messages


def _stale_broadcast(messages: list[Message], document_id: int) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for message in messages:
        async_to_sync(layer.group_send)(conversation_group(message.conversation_id), {
            "type": "chat.stale", "message_id": message.pk, "conversation": message.conversation_id,
            "document_id": document_id,
        })
