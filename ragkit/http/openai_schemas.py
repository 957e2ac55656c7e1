"""Request bodies of the OpenAI-compatible face (`/openai/v1`), and how a chat becomes a question.

What OpenAI clients send is checked as strictly as the native API where it matters to ragkit
(roles, content, sizes: a 422 in OpenAI's error shape, never a 500), and tolerated where clients
differ among themselves: fields ragkit does not use (``n``, ``user``, ``top_p``,
``stream_options``, ``presence_penalty``…) are ignored rather than refused, so Open WebUI, LibreChat
or an SDK work unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ragkit.core.errors import InvalidInput, NotFound
from ragkit.core.types import DEFAULT_TOP_K, MAX_TOP_K
from ragkit.http.schemas import Filters, Integer, Mode, _whole_number
from ragkit.rag.conversation import MAX_HISTORY_TURNS, MAX_TURN_CHARS, Turn

MODEL_PREFIX = "ragkit/"
MAX_MESSAGES = 200  # a long chat is fine: only the latest turns are used (MAX_HISTORY_TURNS)
MAX_MESSAGE_CHARS = 100_000
MAX_EMBEDDING_INPUTS = 256
MAX_EMBEDDING_CHARS = 20_000


# A whole number from 1 (1.0 is one, as JSON Schema has it), with its bound in the schema.
Count = Annotated[int, Field(ge=1), BeforeValidator(_whole_number)]


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"] = Field(description="Only text parts: ragkit answers from text")
    text: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


class ChatMessage(_Tolerant):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)] | Annotated[list[TextPart], Field(max_length=64)]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class RagkitOptions(BaseModel):
    """The documented extension: how to search, for clients that can send extra fields."""

    model_config = ConfigDict(extra="forbid", strict=True)
    top_k: Integer = Field(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)
    mode: Mode = "hybrid"
    filters: Filters = None


class ChatRequest(_Tolerant):
    model: str = Field(min_length=1, max_length=200, description="ragkit/<collection> (GET /models lists them)")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    # For an LLM generator (the newer name wins when a client sends both); the extractive one
    # has no use for them.
    max_tokens: Count | None = None
    max_completion_tokens: Count | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    ragkit: RagkitOptions = Field(default_factory=RagkitOptions)


class EmbeddingRequest(_Tolerant):
    model: str = Field(min_length=1, max_length=200)
    input: Annotated[str, Field(min_length=1, max_length=MAX_EMBEDDING_CHARS)] | Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_EMBEDDING_CHARS)]],
        Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS),
    ]
    # The official client asks for base64 by default (4-byte little-endian floats), others for floats.
    encoding_format: Literal["float", "base64"] = "float"


def collection_of(model: str) -> str:
    """``ragkit/<collection>`` → the collection; anything else is a model ragkit does not have."""
    if not model.startswith(MODEL_PREFIX) or len(model) == len(MODEL_PREFIX):
        raise NotFound(f"no model '{model}': ragkit's models are ragkit/<collection> (GET /openai/v1/models)")
    return model[len(MODEL_PREFIX) :]


def conversation_of(messages: list[ChatMessage]) -> tuple[str, list[Turn], list[str]]:
    """(question, history, system instructions): the last message is the question and must be the
    user's; the user and assistant messages before it are the history (its latest turns, clipped to
    the native API's limits, since chat clients send the whole conversation every time)."""
    *earlier, last = messages
    if last.role != "user":
        raise InvalidInput(f"the last message must be the user's question, not a {last.role} message")
    question = last.text().strip()
    if not question:
        raise InvalidInput("the last message (the question) is empty")
    instructions = [m.text() for m in earlier if m.role in ("system", "developer") and m.text().strip()]
    turns = [Turn(m.role, m.text()[:MAX_TURN_CHARS]) for m in earlier if m.role in ("user", "assistant")]
    history = [t for t in turns if t.content.strip()][-MAX_HISTORY_TURNS:]
    return question, history, instructions


def usage(prompt: str, completion: str) -> dict[str, Any]:
    """Token counts as words: ragkit's generators do not all count tokens (the extractive one has
    none); clients display these, they bill nothing."""
    prompt_tokens, completion_tokens = len(prompt.split()), len(completion.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
