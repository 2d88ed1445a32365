"""Settings of answers: the language model, the chat and feedback (a part of config/settings.py,
which imports it)."""

from __future__ import annotations

from config.env import SettingsError, env_bool, env_float, env_int, env_str

# --- Generation -----------------------------------------------------------------------------
# https://huggingface.co/docs/huggingface_hub/package_reference/inference_client
# Any chat-completion server (TGI, vLLM, llama.cpp, Ollama, Inference Providers); empty for
# extractive answers.
LLM_BASE_URL = env_str("LLM_BASE_URL", "")
LLM_MODEL = env_str("LLM_MODEL", "")
if LLM_BASE_URL and not LLM_MODEL:
    raise SettingsError("LLM_MODEL is required when LLM_BASE_URL is set (the model name the server serves).")
HF_TOKEN = env_str("HF_TOKEN", "")
LLM_TIMEOUT = env_float("LLM_TIMEOUT", 30.0)  # seconds to connect, and to wait for each streamed token
LLM_TOTAL_TIMEOUT = env_float("LLM_TOTAL_TIMEOUT", 180.0)  # seconds for a whole answer
LLM_MAX_TOKENS = env_int("LLM_MAX_TOKENS", 384, minimum=16)  # tokens the model may write
LLM_CONTEXT_TOKENS = env_int("LLM_CONTEXT_TOKENS", 2048, minimum=256)  # the server's context window
LLM_TEMPERATURE = env_float("LLM_TEMPERATURE", 0.1)

# --- Chat -----------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#login-url
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/chat/"
LOGOUT_REDIRECT_URL = "login"
CHAT_ALLOW_ANONYMOUS = env_bool("CHAT_ALLOW_ANONYMOUS", False)  # anonymous chat, public sources only
CHAT_MAX_QUESTION_CHARS = env_int("CHAT_MAX_QUESTION_CHARS", 2000, minimum=1)
CHAT_MAX_MESSAGE_BYTES = env_int("CHAT_MAX_MESSAGE_BYTES", 16 * 1024, minimum=256)  # one websocket frame
CHAT_PASSAGES = env_int("CHAT_PASSAGES", 5, minimum=1)  # retrieved passages given to the answer
CHAT_HISTORY_TURNS = env_int("CHAT_HISTORY_TURNS", 3, minimum=0)  # earlier turns sent to the model
CHAT_EXTRACTIVE_SENTENCES = env_int("CHAT_EXTRACTIVE_SENTENCES", 3, minimum=1)
# Abstention (chat/retrieval/answerability.py): a passage whose calibrated relevance is below this
# is no evidence of an answer; with none above it the chat says the sources do not say, and the
# search API marks results `relevant: false`. Chosen on SciFact train (benchmarks/answerability.py).
CHAT_RELEVANCE_THRESHOLD = env_float("CHAT_RELEVANCE_THRESHOLD", 0.047)
CHAT_MIN_COSINE = env_float("CHAT_MIN_COSINE", 0.382)  # best question-passage cosine below it: off-topic
if not 0.0 <= CHAT_RELEVANCE_THRESHOLD <= 1.0:
    raise SettingsError(f"CHAT_RELEVANCE_THRESHOLD is a probability: 0..1, not {CHAT_RELEVANCE_THRESHOLD}.")
CHAT_RELATED_PASSAGES = env_int("CHAT_RELATED_PASSAGES", 3, minimum=0)  # "possibly related" when abstaining

# --- Feedback (feedback/) ---------------------------------------------------------------------
# How votes become each chunk's feedback score in the search index (a smoothed, decaying score in
# (-1, 1)) and what the feedback consumer may do; defaults chosen on SciFact's train split (README,
# "Feedback"). Retrieval's boost for that score is SEARCH_FEEDBACK_WEIGHT above.
FEEDBACK_PRIOR = env_float("FEEDBACK_PRIOR", 1.0)  # pseudo-votes at 0: one vote moves a chunk 1/(1+prior)
if FEEDBACK_PRIOR <= 0:
    raise SettingsError("FEEDBACK_PRIOR must be above 0 (it is what keeps one vote from burying a chunk).")
FEEDBACK_DOWN_WEIGHT = env_float("FEEDBACK_DOWN_WEIGHT", 0.5)  # a thumbs-down's weight beside a thumbs-up's
if not 0 <= FEEDBACK_DOWN_WEIGHT <= 1:
    raise SettingsError("FEEDBACK_DOWN_WEIGHT must be between 0 and 1.")
FEEDBACK_HALF_LIFE_DAYS = env_float("FEEDBACK_HALF_LIFE_DAYS", 90.0)  # a vote's weight halves every N days
if FEEDBACK_HALF_LIFE_DAYS <= 0:
    raise SettingsError("FEEDBACK_HALF_LIFE_DAYS must be above 0.")
FEEDBACK_FLUSH_SECONDS = env_float("FEEDBACK_FLUSH_SECONDS", 0.5)  # votes in one window: one index write
if FEEDBACK_FLUSH_SECONDS < 0:
    raise SettingsError("FEEDBACK_FLUSH_SECONDS must not be negative.")
FEEDBACK_USER_VOTES_PER_HOUR = env_int("FEEDBACK_USER_VOTES_PER_HOUR", 60, minimum=1)  # more are kept, not counted
FEEDBACK_INCOMPLETE_USERS = env_int("FEEDBACK_INCOMPLETE_USERS", 3, minimum=1)  # users saying "incomplete"
FEEDBACK_REFETCH_COOLDOWN_SECONDS = env_int("FEEDBACK_REFETCH_COOLDOWN_SECONDS", 600, minimum=0)
FEEDBACK_REFETCH_TIMEOUT = env_float("FEEDBACK_REFETCH_TIMEOUT", 10.0)  # seconds, per connect and per read
FEEDBACK_REFRESH_SECONDS = env_int("FEEDBACK_REFRESH_SECONDS", 6 * 3600, minimum=60)  # re-decay every score
